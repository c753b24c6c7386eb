"""Crash: `kill -9` the real ledger-gateway process in the middle of a transfer load.

The gateway runs as `python -m p2e_ledger_gateway` on SQLite (and on the local PostgreSQL,
marked `postgres`), its outbox publishing to a real nats-server; no Docker needed.
20 concurrent clients send transfers with unique request_ids; every 150 answers the process
is killed with SIGKILL (three times) and restarted on the same data, and each client first
re-sends, with the same request_id, the request whose answer never came. Then: every
answered transfer is there exactly once, every request_id had one effect, a retry replayed
exactly the requests that had committed before it was sent (a batch the gateway had already
handed to its transfer writer process may still commit just after the kill), no balance is
negative, supply
equals mints, the history replays to the balances, the audit chain verifies, and the outbox
drained to JetStream (each settled transfer twice, payer and payee, each failed one once,
nothing duplicated).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from p2e_kit.bus import MSG_ID_HEADER, Bus
from p2e_kit.channels import caller_metadata
from p2e_kit.natsd import NatsServer, free_port
from p2e_kit.status import decode
from p2e_kit.subprocess_service import ServiceProcess
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2_grpc
from p2engine.ledger.v1 import ledger_service_pb2 as pb

AGENTS = [f"crash{n}" for n in range(6)]
START_CENTS = 1000_00
CLIENTS = 20
JOBS_PER_CLIENT = 40
KILLS_AT_ANSWERS = (150, 300, 450)
OPERATOR = caller_metadata("operator", "fault-test")
LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
SETTLED = ledger_pb2.TRANSFER_STATUS_SETTLED


@dataclass(frozen=True)
class Job:
    request_id: str
    payer: str
    payee: str
    cents: int

    @property
    def amount(self) -> str:
        return f"{self.cents // 100}.{self.cents % 100:02d}"


@dataclass
class Load:
    """Each client's queue of jobs (the head is re-sent until answered), and what came back."""

    queues: list[deque[Job]]
    answers: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # outcome, id, replay
    sent: set[str] = field(default_factory=set)
    # request_id -> when the kill that last left it without an answer happened (µs)
    lost_at: dict[str, int] = field(default_factory=dict)
    # request_id of a lost one -> when it was last sent again (µs)
    resent_at: dict[str, int] = field(default_factory=dict)
    kill_at_answers: float = float("inf")
    enough: asyncio.Event = field(default_factory=asyncio.Event)


class Gateway(ServiceProcess):
    """The ledger-gateway as a child process on a fixed port and data dir."""

    def __init__(self, tmp: Path, nats_url: str, database_url: str) -> None:
        config = tmp / "config"
        config.mkdir()
        ledger = {"initial_balance": 0, "asset": "P2E", "scale": 2, "policies": {}}
        (config / "config.json").write_text(json.dumps({"ledger": ledger}))
        (config / "agents.yml").write_text("agents:\n" + "".join(f"  - id: {a}\n" for a in AGENTS))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2E_")}
        env |= {
            "P2E_LEDGER_PORT": str(port),
            "P2E_DATA_DIR": str(tmp / "data"),
            "P2E_CONFIG_DIR": str(config),
            "P2E_NATS_URL": nats_url,
            "P2E_LOG_LEVEL": "WARNING",
            "P2E_LEDGER_OUTBOX_POLL_SECONDS": "0.2",
            "P2E_LEDGER_DATABASE_URL": database_url,  # empty: SQLite under the data dir
        }
        super().__init__("p2e_ledger_gateway", f"127.0.0.1:{port}", env, tmp / "ledger.log")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Empty (SQLite under the gateway's data dir), or a throwaway PostgreSQL database."""
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else ""


@pytest.fixture
async def gateway(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> AsyncIterator[Gateway]:
    running = Gateway(tmp_path, nats_server.url, database_url)
    try:
        yield running
    finally:
        await running.kill()


@asynccontextmanager
async def ledger_stub(address: str) -> AsyncIterator[ledger_service_pb2_grpc.LedgerServiceStub]:
    # No transparent retries: this test decides what is re-sent, and when.
    options = [("grpc.enable_retries", 0)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        yield ledger_service_pb2_grpc.LedgerServiceStub(channel)


def plan(seed: int = 11) -> list[deque[Job]]:
    rng = random.Random(seed)
    queues = []
    for client in range(CLIENTS):
        jobs = deque()
        for n in range(JOBS_PER_CLIENT):
            payer, payee = rng.sample(AGENTS, 2)
            jobs.append(Job(f"c{client}-{n}", payer, payee, rng.randint(1, 30_000)))
        queues.append(jobs)
    return queues


async def send(stub: ledger_service_pb2_grpc.LedgerServiceStub, job: Job, load: Load) -> bool:
    """Send one transfer; record its answer, or return False when none came back."""
    assert job.request_id not in load.answers
    request = pb.CreateTransferRequest(
        to_agent=job.payee, amount=job.amount, request_id=job.request_id
    )
    if job.request_id in load.lost_at:
        load.resent_at[job.request_id] = time.time_ns() // 1000
    load.sent.add(job.request_id)
    try:
        done = await stub.CreateTransfer(
            request, metadata=caller_metadata("agent", job.payer), timeout=10
        )
        load.answers[job.request_id] = ("SETTLED", done.id, done.replayed)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in LOST:
            return False
        error = decode(exc)
        replayed = error.metadata.get("replayed") == "true"
        outcome = f"{error.code}/{error.reason}"
        load.answers[job.request_id] = (outcome, error.metadata["transfer_id"], replayed)
    if len(load.answers) >= load.kill_at_answers:
        load.enough.set()
    return True


async def client(address: str, queue: deque[Job], load: Load) -> None:
    """Send the queue's jobs in order until the server stops answering; the unanswered job
    stays at the head, to be re-sent (same request_id) first after the restart."""
    async with ledger_stub(address) as stub:
        while queue:
            if not await send(stub, queue[0], load):
                return
            queue.popleft()


async def run(gateway: Gateway, load: Load, kill_at_answers: float) -> None:
    """Run the clients; SIGKILL the gateway once `kill_at_answers` answers came back."""
    load.kill_at_answers = kill_at_answers
    load.enough.clear()
    clients = [asyncio.create_task(client(gateway.address, q, load)) for q in load.queues]
    if kill_at_answers < float("inf"):
        async with asyncio.timeout(60):
            await load.enough.wait()
        await asyncio.sleep(random.uniform(0, 0.02))
        await gateway.kill()  # while the clients are still sending
        killed_at = time.time_ns() // 1000
    async with asyncio.timeout(60):
        await asyncio.gather(*clients)
    if kill_at_answers < float("inf"):
        lost = [queue[0].request_id for queue in load.queues if queue]
        assert lost, "the kill should have left requests without an answer"
        load.lost_at |= dict.fromkeys(lost, killed_at)


async def test_kill_9_during_transfer_load_loses_and_duplicates_nothing(
    gateway: Gateway, bus: Bus
) -> None:
    await gateway.start()
    async with ledger_stub(gateway.address) as stub:
        init = pb.InitWalletsRequest(agent_ids=AGENTS, initial_balance="1000")
        await stub.InitWallets(init, metadata=OPERATOR)
    load = Load(plan())
    for kill_at_answers in KILLS_AT_ANSWERS:
        await run(gateway, load, kill_at_answers)
        await gateway.start()  # same port, same database
    await run(gateway, load, float("inf"))  # the unanswered first, then the rest of the load
    assert len(load.answers) == CLIENTS * JOBS_PER_CLIENT

    async with ledger_stub(gateway.address) as stub:
        await check_ledger(stub)
        settled, failed = await check_transfers(stub, load)
        await check_published(stub, bus, settled, failed)


async def all_transfers(stub: ledger_service_pb2_grpc.LedgerServiceStub) -> list:
    """Every transfer once (from its payer's history)."""
    found = []
    for agent in AGENTS:
        token = ""
        while True:
            page = await stub.ListTransactions(
                pb.ListTransactionsRequest(agent_id=agent, page_size=500, page_token=token)
            )
            found += [t for t in page.transfers if t.from_agent == agent]
            token = page.next_page_token
            if not token:
                break
    return found


async def check_transfers(
    stub: ledger_service_pb2_grpc.LedgerServiceStub, load: Load
) -> tuple[list, list]:
    """One row per request_id, the answered ones as answered; history replays to balances."""
    transfers = await all_transfers(stub)
    per_request = Counter((t.from_agent, t.request_id) for t in transfers)
    assert max(per_request.values()) == 1, "a request_id took effect twice"
    assert len({t.id for t in transfers}) == len(transfers)
    by_request = {t.request_id: t for t in transfers}
    assert set(by_request) == load.sent  # every sent request recorded once, nothing else
    assert set(load.answers) == load.sent
    for request_id, (outcome, transfer_id, _replayed) in load.answers.items():
        row = by_request[request_id]
        assert row.id == transfer_id, request_id
        assert (row.status == SETTLED) == (outcome == "SETTLED"), (request_id, outcome)
    for request_id, killed_at in load.lost_at.items():  # replayed iff committed before
        created = by_request[request_id].create_time.ToMicroseconds()
        resent = load.resent_at[request_id]
        assert load.answers[request_id][2] == (created < resent), (request_id, created, resent)
        # Committed after the kill only if it was already in the writer's hands: moments later.
        assert created < killed_at + 5_000_000 or created > resent, (request_id, killed_at)
    expected = dict.fromkeys(AGENTS, START_CENTS)
    for t in transfers:
        if t.status == SETTLED:
            expected[t.from_agent] -= cents(t.amount.amount)
            expected[t.to_agent] += cents(t.amount.amount)
    overview = await stub.GetOverview(pb.GetOverviewRequest())
    assert {w.agent_id: cents(w.balance.amount) for w in overview.wallets} == expected
    settled = [t for t in transfers if t.status == SETTLED]
    failed = [t for t in transfers if t.status != SETTLED]
    assert {t.failure_reason for t in failed} <= {"INSUFFICIENT_FUNDS"}
    metrics = await stub.GetMetrics(pb.GetMetricsRequest())
    assert (metrics.transaction_count, metrics.failed_count) == (len(settled), len(failed))
    audit = await stub.VerifyAudit(pb.VerifyAuditRequest())
    assert (audit.valid, audit.problem) == (True, "")
    assert audit.checked == len(AGENTS) + len(transfers)  # wallet_created + one per transfer
    return settled, failed


async def check_ledger(stub: ledger_service_pb2_grpc.LedgerServiceStub) -> None:
    """No negative balance; the supply is what was minted."""
    overview = await stub.GetOverview(pb.GetOverviewRequest())
    balances = [cents(w.balance.amount) for w in overview.wallets]
    assert len(balances) == len(AGENTS) and min(balances) >= 0
    metrics = await stub.GetMetrics(pb.GetMetricsRequest())
    assert cents(metrics.total_minted.amount) == START_CENTS * len(AGENTS)
    assert sum(balances) == cents(metrics.total_supply.amount) == START_CENTS * len(AGENTS)


async def check_published(
    stub: ledger_service_pb2_grpc.LedgerServiceStub, bus: Bus, settled: list, failed: list
) -> None:
    """The outbox empties after the restart; JetStream holds each event exactly once."""
    for _ in range(300):
        if not (await stub.GetDebugInfo(pb.GetDebugInfoRequest())).outbox_pending:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the outbox did not drain within 30 s")
    expected = {f"{t.id}:transfer_settled" for t in settled}
    expected |= {f"{t.id}:transfer_settled:{t.to_agent}" for t in settled}
    expected |= {f"{t.id}:transfer_failed" for t in failed}
    info = await bus.js.stream_info("P2E_LEDGER")
    assert info.state.messages == len(expected) == 2 * len(settled) + len(failed)
    sub = await bus.js.pull_subscribe("p2e.ledger.>", stream="P2E_LEDGER")
    seen: list[str] = []
    async with asyncio.timeout(30):
        while len(seen) < len(expected):
            for msg in await sub.fetch(500, timeout=5):
                seen.append(msg.headers[MSG_ID_HEADER])
                await msg.ack()
    await sub.unsubscribe()
    assert len(seen) == len(set(seen)) and set(seen) == expected


def cents(amount: str) -> int:
    units, _, fraction = amount.partition(".")
    return int(units) * 100 + int(fraction.ljust(2, "0"))
