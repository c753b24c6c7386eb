"""Benchmark: one offline chat turn with one tool call through every real service.

    uv run python bench/chat_turn.py [--turns 60] [--concurrency 50] [--use-running]

Starts an isolated stack (`p2engine up` with free ports in a temp folder) unless
--use-running is given, then measures, in the same run:
  floor  - gRPC unary round trip (Health.Check on the orchestrator) and a JetStream publish-ack
  turn   - CreateConversation + SendMessage("Check my balance") until the turn finishes:
           user message -> model -> tool call over JetStream -> tool-runner -> ledger -> result
           -> model -> answer, every state persisted and published as an artifact.
Prints p50/p99 at concurrency 1 and turns/s at the given concurrency, with the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from interrupt import run_interruptible

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(
    n: int, concurrency: int, op: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    """Run op(i) n times with `concurrency` in flight; per-call latencies (ms) and calls/s."""
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await op(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, n / (time.perf_counter() - start)


async def measure(env: dict[str, str], turns: int, concurrency: int) -> None:
    import nats
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from p2e_kit.channels import open_channel
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as osvc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2_grpc as ogrpc

    addr = env["P2E_ORCHESTRATOR_ADDR"]
    channel = open_channel(addr)
    health = health_pb2_grpc.HealthStub(channel)
    conversations = ogrpc.ConversationServiceStub(channel)

    async def echo(_: int) -> None:
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)

    nc = await nats.connect(env["P2E_NATS_URL"])
    js = nc.jetstream()
    await js.add_stream(name="BENCH_FLOOR", subjects=["bench.floor"], storage="file")

    async def publish(i: int) -> None:
        await js.publish(
            "bench.floor", b"x" * 512, headers={"Nats-Msg-Id": f"m{i}-{time.time_ns()}"}
        )

    async def turn(_: int) -> None:
        conv = await conversations.CreateConversation(
            osvc.CreateConversationRequest(agent_id="agent_alpha"), timeout=10
        )
        finished = False
        async for event in conversations.SendMessage(
            osvc.SendMessageRequest(conversation=conv.id, text="Check my balance"), timeout=60
        ):
            finished = finished or event.HasField("finished")
        if not finished:
            raise RuntimeError("turn did not finish")

    for op in (echo, publish, turn):  # warm up every path
        await timed(5, 1, op)
    rows = []
    for name, op, n in (("grpc unary echo", echo, 2000), ("jetstream publish-ack", publish, 2000)):
        lat1, _ = await timed(n // 4, 1, op)
        _, rate = await timed(n, concurrency, op)
        rows.append((name, pct(lat1, 0.5), pct(lat1, 0.99), rate))
    lat1, _ = await timed(turns, 1, turn)
    _, rate = await timed(turns * 2, concurrency, turn)
    rows.append(("chat turn (1 tool call)", pct(lat1, 0.5), pct(lat1, 0.99), rate))
    await nc.close()
    await channel.close()

    print(f"\nconcurrency 1 for latency, {concurrency} for throughput; {os.cpu_count()} cores")
    print(f"{'path':<26}{'p50 ms':>10}{'p99 ms':>10}{'per s':>10}")
    for name, p50, p99, per_s in rows:
        print(f"{name:<26}{p50:>10.2f}{p99:>10.2f}{per_s:>10.1f}")
    echo_row, pub_row, turn_row = rows
    print(
        f"\nturn p50 = {turn_row[1] / echo_row[1]:.0f}x gRPC echo p50, "
        f"{turn_row[1] / pub_row[1]:.0f}x JetStream publish-ack p50; "
        f"turn throughput = {100 * turn_row[3] / echo_row[3]:.1f}% of echo calls/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--use-running", action="store_true", help="measure the stack already up")
    args = parser.parse_args()
    from p2e_kit.stackenv import isolated_stack_env

    if args.use_running:
        from p2e_kit.settings import DEFAULT_NATS_URL, Endpoints

        env = {
            "P2E_ORCHESTRATOR_ADDR": Endpoints().orchestrator_addr,
            "P2E_NATS_URL": os.environ.get("P2E_NATS_URL", DEFAULT_NATS_URL),
        }
        asyncio.run(measure(env, args.turns, args.concurrency))
        return 0
    with tempfile.TemporaryDirectory(prefix="p2e-bench-") as tmp:
        env = isolated_stack_env(Path(tmp), REPO / "config")
        env["P2E_LOG_LEVEL"] = "WARNING"
        full_env = {**os.environ, **env}
        p2engine = [sys.executable, "-m", "p2e_cli.main"]
        subprocess.run([*p2engine, "up"], env=full_env, check=True)
        try:
            subprocess.run(
                [*p2engine, "ledger", "init", "--balance", "1000"],
                env=full_env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            asyncio.run(measure(env, args.turns, args.concurrency))
        finally:
            subprocess.run([*p2engine, "down"], env=full_env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(run_interruptible(main, "bench/chat_turn.py"))
