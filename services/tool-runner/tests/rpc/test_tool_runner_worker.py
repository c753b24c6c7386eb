"""The work-queue worker against a real nats-server and a real (in-test) LedgerService."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from pydantic import BaseModel, ConfigDict

from p2e_kit.bus import TOOL_RUNNER_EXEC, TOOLS, Bus, ConsumerSpec, connect, tool_exec_subject
from p2e_kit.channels import open_channel
from p2e_kit.db import create_engine
from p2e_tool_runner.config import Settings
from p2e_tool_runner.executor import Executor
from p2e_tool_runner.ledger_client import GrpcLedger
from p2e_tool_runner.sdk import ToolContext, ToolRegistry, function_tool
from p2e_tool_runner.server import Runtime, build_runtime
from p2e_tool_runner.store import ExecutionStore
from p2e_tool_runner.worker import ToolWorker
from p2engine.tools.v1 import events_pb2, tools_pb2

OK = tools_pb2.TOOL_RESULT_STATUS_OK
ERROR = tools_pb2.TOOL_RESULT_STATUS_ERROR


class Completions:
    """Every ToolExecutionCompleted seen on p2e.tools.completed.>, by call_id."""

    def __init__(self) -> None:
        self.by_call: dict[str, list[events_pb2.ToolExecutionCompleted]] = {}
        self._changed = asyncio.Condition()

    async def on_message(self, msg) -> None:
        event = events_pb2.ToolExecutionCompleted.FromString(msg.data)
        async with self._changed:
            self.by_call.setdefault(event.result.call_id, []).append(event)
            self._changed.notify_all()

    async def wait(self, call_id: str, count: int = 1) -> events_pb2.ToolExecutionCompleted:
        async with asyncio.timeout(15), self._changed:
            await self._changed.wait_for(lambda: len(self.by_call.get(call_id, [])) >= count)
        return self.by_call[call_id][count - 1]


@pytest.fixture
async def completions(bus: Bus) -> AsyncIterator[Completions]:
    seen = Completions()
    sub = await bus.nc.subscribe("p2e.tools.completed.>", cb=seen.on_message)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


@dataclass
class Replica:
    """One tool-runner replica: its own NATS connection, ledger channel and database."""

    runtime: Runtime
    channel: grpc.aio.Channel
    bus: Bus

    async def close(self) -> None:
        await self.runtime.close()
        await self.channel.close()
        await self.bus.close()


async def start_replica(settings: Settings, nats_url: str, ledger_addr: str) -> Replica:
    replica_bus = await connect(nats_url, "tool_runner")
    channel = open_channel(ledger_addr)
    runtime = await build_runtime(settings, ledger=GrpcLedger(channel), bus=replica_bus)
    assert runtime.worker is not None
    await runtime.worker.start()
    return Replica(runtime, channel, replica_bus)


def replica_settings(tmp_path: Path, name: str) -> Settings:
    return Settings(data_dir=tmp_path / name, worker_fetch_timeout_seconds=0.2, port=0)


@pytest.fixture
async def replica(tmp_path: Path, nats_server, ledger) -> AsyncIterator[Replica]:
    started = await start_replica(replica_settings(tmp_path, "r1"), nats_server.url, ledger[1])
    try:
        yield started
    finally:
        await started.close()


async def request(
    bus: Bus, call_id: str, tool: str, args: object, *, agent: str = "agent_alpha", msg_id: str = ""
) -> None:
    event = events_pb2.ToolExecutionRequested(
        call_id=call_id,
        tool_name=tool,
        arguments_json=args if isinstance(args, str) else json.dumps(args),
        agent_id=agent,
        conversation_id="conv-1",
        branch_id="main",
        state_id=f"st-{call_id}",
    )
    await bus.publish(tool_exec_subject(tool), event, msg_id=msg_id or call_id)


async def drained(bus: Bus) -> None:
    """Wait until the work queue holds nothing pending or unacknowledged."""
    async with asyncio.timeout(15):
        while True:
            info = await bus.js.consumer_info(
                TOOL_RUNNER_EXEC.stream.name, TOOL_RUNNER_EXEC.durable
            )
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


async def test_worker_runs_weather_balance_and_transfer(bus, completions, replica, fake_ledger):
    await request(bus, "w-1", "get_weather", {"city": "Tokyo"})
    await request(bus, "b-1", "check_balance", {})
    await request(bus, "t-1", "transfer_funds", '{"to_agent": "agent_beta", "amount": 25.5}')

    weather = await completions.wait("w-1")
    assert weather.result.status == OK
    assert json.loads(weather.result.result_json)["city"] == "Tokyo"
    assert (weather.agent_id, weather.conversation_id) == ("agent_alpha", "conv-1")

    balance = await completions.wait("b-1")
    assert balance.result.status == OK, balance.result.error_message
    assert json.loads(balance.result.result_json)["agent_id"] == "agent_alpha"

    transfer = await completions.wait("t-1")
    assert transfer.result.status == OK, transfer.result.error_message
    assert json.loads(transfer.result.result_json)["amount"] == "25.50"
    assert fake_ledger.balances["agent_alpha"] == Decimal("74.50")
    assert fake_ledger.transfers[0].request_id == "t-1"
    assert {c.conversation for c in fake_ledger.seen if c.method == "CreateTransfer"} == {"conv-1"}
    await drained(bus)


async def test_redelivered_call_id_never_pays_twice(
    bus, completions, replica, fake_ledger, tmp_path, nats_server, ledger
):
    args = {"to_agent": "agent_beta", "amount": "10"}
    await request(bus, "t-2", "transfer_funds", args)
    first = await completions.wait("t-2")
    assert first.result.status == OK
    # The same call again (a redelivery after a lost ack): the stored result, no new transfer.
    await request(bus, "t-2", "transfer_funds", args, msg_id="t-2-again")
    second = await completions.wait("t-2", count=2)
    assert second.result == first.result
    assert len(fake_ledger.transfers) == 1
    # A replica that never saw the call (empty database): the ledger replays by request_id.
    await replica.close()
    other = await start_replica(replica_settings(tmp_path, "r2"), nats_server.url, ledger[1])
    try:
        await request(bus, "t-2", "transfer_funds", args, msg_id="t-2-third")
        third = await completions.wait("t-2", count=3)
    finally:
        await other.close()
    assert third.result.status == OK
    assert json.loads(third.result.result_json)["replayed"] is True
    assert len(fake_ledger.transfers) == 1
    assert fake_ledger.balances["agent_alpha"] == Decimal("90.00")
    assert fake_ledger.balances["agent_beta"] == Decimal("60.00")


async def test_payer_is_always_the_runtime_agent(bus, completions, replica, fake_ledger):
    forged = {"to_agent": "agent_beta", "amount": "100", "from_agent": "treasurer"}
    await request(bus, "t-3", "transfer_funds", forged, agent="agent_beta")
    refused = await completions.wait("t-3")
    assert refused.result.status == ERROR
    assert refused.result.error_code == "INVALID_ARGUMENT"
    assert "from_agent" in refused.result.error_message

    await request(
        bus, "t-4", "transfer_funds", {"to_agent": "treasurer", "amount": "5"}, agent="agent_beta"
    )
    paid = await completions.wait("t-4")
    assert paid.result.status == OK, paid.result.error_message
    assert json.loads(paid.result.result_json)["from_agent"] == "agent_beta"
    assert fake_ledger.callers("CreateTransfer") == {"agent:agent_beta"}
    assert fake_ledger.balances["treasurer"] == Decimal("1005.00")
    assert fake_ledger.balances["agent_beta"] == Decimal("45.00")


async def test_tool_errors_are_completed_not_lost(bus, completions, replica, fake_ledger):
    await request(bus, "e-1", "transfer_funds", {"to_agent": "agent_beta", "amount": "999"})
    await request(bus, "e-2", "no_such_tool", {})
    await request(bus, "e-3", "get_weather", "[1]")
    await request(bus, "e-4", "delegate", {"agent_id": "agent_helper", "message": "hi"})
    codes = [(await completions.wait(c)).result.error_code for c in ("e-1", "e-2", "e-3", "e-4")]
    assert codes == ["INSUFFICIENT_FUNDS", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"]
    await drained(bus)


async def test_poison_message_is_terminated(bus, completions, replica):
    await bus.js.publish(tool_exec_subject("get_weather"), b"\xff\x00garbage")
    await request(bus, "p-1", "get_weather", {"city": "Lima"})
    assert (await completions.wait("p-1")).result.status == OK
    await drained(bus)
    info = await bus.js.consumer_info(TOOL_RUNNER_EXEC.stream.name, TOOL_RUNNER_EXEC.durable)
    assert info.num_redelivered == 0
    assert list(completions.by_call) == ["p-1"]


async def test_many_calls_run_concurrently_across_replicas(
    bus, completions, replica, tmp_path, nats_server, ledger
):
    other = await start_replica(replica_settings(tmp_path, "r2"), nats_server.url, ledger[1])
    try:
        calls = [f"many-{n}" for n in range(40)]
        await asyncio.gather(
            *(request(bus, c, "get_weather", {"city": f"Town {n}"}) for n, c in enumerate(calls))
        )
        results = [await completions.wait(c) for c in calls]
    finally:
        await other.close()
    assert all(r.result.status == OK for r in results)
    assert len({r.result.result_json for r in results}) > 1
    await drained(bus)


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def test_long_calls_are_kept_alive_past_ack_wait(bus, completions, sqlite_url) -> None:
    runs: list[str] = []

    @function_tool(name="slow_job", description="takes a while", input_schema=NoArgs)
    async def slow_job(ctx: ToolContext, args: NoArgs) -> dict[str, bool]:
        runs.append(ctx.call_id)
        await asyncio.sleep(2.5)
        return {"done": True}

    engine = create_engine(sqlite_url)
    store = ExecutionStore(engine)
    await store.create_tables()
    consumer = ConsumerSpec("test_slow", TOOLS, "p2e.tools.exec.>", ack_wait_seconds=1.0)
    worker = ToolWorker(
        bus, Executor(ToolRegistry([slow_job]), store), consumer=consumer, fetch_timeout=0.2
    )
    await worker.start()
    try:
        await request(bus, "slow-1", "slow_job", {})
        await asyncio.sleep(1.8)  # well past AckWait, while the job still runs
        info = await bus.js.consumer_info(TOOLS.name, "test_slow")
        done = await completions.wait("slow-1")
        await asyncio.sleep(0.3)
    finally:
        await worker.stop()
        await engine.dispose()
    assert done.result.status == OK, done.result.error_message
    assert runs == ["slow-1"]
    assert info.num_redelivered == 0 and info.num_ack_pending == 1
    assert len(completions.by_call["slow-1"]) == 1  # delivered once, completed once
