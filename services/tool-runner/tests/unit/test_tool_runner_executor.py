"""The execution engine: validation, cache, dedup, idempotency by call_id, timeouts."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from p2e_kit.errors import InvalidArgument
from p2e_tool_runner.cache import ResultCache
from p2e_tool_runner.executor import ExecutionRequest, Executor, parse_arguments
from p2e_tool_runner.sdk import ToolContext, ToolRegistry, function_tool
from p2e_tool_runner.store import ExecutionRecord, ExecutionStore
from p2e_tool_runner.tools import BUILTIN_TOOL_MODULES


class NoteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = ""


class Harness:
    """Test tools that record each run, plus the built-in tools."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.now = 0.0
        self.registry = ToolRegistry.from_modules(BUILTIN_TOOL_MODULES)
        for policy in ("none", "penalty", "strict"):
            self.registry.register(self._pay(policy))
        self.registry.register(self._lookup())
        self.registry.register(self._special())

    def _pay(self, policy: Any):
        @function_tool(
            name=f"pay_{policy}", description="pays", input_schema=NoteArgs, dedup_policy=policy
        )
        async def pay(ctx: ToolContext, args: NoteArgs) -> dict[str, Any]:
            self.calls.append(ctx.call_id)
            return {"paid": args.note, "by": ctx.agent_id}

        return pay

    def _lookup(self):
        @function_tool(
            name="lookup",
            description="reads",
            input_schema=NoteArgs,
            side_effect_free=True,
            cache_ttl=60,
        )
        async def lookup(ctx: ToolContext, args: NoteArgs) -> dict[str, Any]:
            self.calls.append(ctx.call_id)
            if args.note == "fail":
                raise InvalidArgument("cannot look that up", reason="BAD_LOOKUP")
            return {"value": args.note, "price": Decimal("1.10")}

        return lookup

    def _special(self):
        @function_tool(name="special", description="slow or broken", input_schema=NoteArgs)
        async def special(ctx: ToolContext, args: NoteArgs) -> list[str]:
            self.calls.append(ctx.call_id)
            if args.note == "boom":
                raise RuntimeError("bug in the tool")
            if args.note == "slow":
                await asyncio.sleep(10)
            if args.note == "gate":
                await self.gate.wait()
            return ["done"]

        return special


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def executor(harness: Harness, store: ExecutionStore, memory_ledger) -> Executor:
    cache = ResultCache(clock=lambda: harness.now)
    return Executor(harness.registry, store, ledger=memory_ledger, cache=cache, timeout_seconds=0.2)


def call(
    tool: str,
    args: object = None,
    *,
    call_id: str = "c1",
    agent: str = "agent_alpha",
    conversation: str = "conv",
) -> ExecutionRequest:
    text = args if isinstance(args, str) else json.dumps(args or {})
    return ExecutionRequest(call_id, tool, text, agent, conversation)


# -- arguments -----------------------------------------------------------------------------


def test_parse_arguments() -> None:
    assert parse_arguments("") == {} and parse_arguments("  ") == {}
    assert parse_arguments('{"amount": 25.5}') == {"amount": Decimal("25.5")}
    for bad in ("[1]", "3", "null", "{oops"):
        with pytest.raises(InvalidArgument):
            parse_arguments(bad)


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ('{"to_agent": "agent_beta", "amount": 25.5}', "25.5"),
        ('{"to_agent": "agent_beta", "amount": "25.50"}', "25.50"),
        ('{"to_agent": "agent_beta", "amount": 25}', "25"),
        ('{"to_agent": "agent_beta", "amount": 1e1}', "10"),
        ('{"to_agent": "agent_beta", "amount": 0.1}', "0.1"),
    ],
)
async def test_transfer_amount_stays_exact(executor, memory_ledger, text: str, sent: str) -> None:
    outcome = await executor.execute(call("transfer_funds", text, call_id="pay-1"))
    assert outcome.ok, outcome.error_message
    request = memory_ledger.requests[-1]
    assert request["amount"] == sent
    assert request["caller_agent"] == "agent_alpha"
    assert request["request_id"] == "pay-1"
    assert request["conversation_id"] == "conv"


@pytest.mark.parametrize("extra", ["from_agent", "agent_id", "payer"])
async def test_transfer_refuses_extra_arguments(executor, memory_ledger, extra: str) -> None:
    args = {"to_agent": "agent_beta", "amount": "5", extra: "treasurer"}
    outcome = await executor.execute(call("transfer_funds", args))
    assert (outcome.status, outcome.error_code) == ("ERROR", "INVALID_ARGUMENT")
    assert extra in outcome.error_message
    assert memory_ledger.requests == []


@pytest.mark.parametrize(
    "args",
    [
        {"to_agent": "agent_beta"},
        {"to_agent": "agent_beta", "amount": "-1"},
        {"to_agent": "agent_beta", "amount": 0},
        {"to_agent": "agent_beta", "amount": "NaN"},
        {"to_agent": "agent_beta", "amount": "ten"},
        {"to_agent": "", "amount": "1"},
    ],
)
async def test_transfer_validates_arguments(executor, memory_ledger, args) -> None:
    outcome = await executor.execute(call("transfer_funds", args))
    assert outcome.error_code == "INVALID_ARGUMENT", outcome
    assert memory_ledger.requests == []


async def test_history_limit_bounds(executor) -> None:
    for n, limit in enumerate((0, 101, "x")):
        outcome = await executor.execute(
            call("transaction_history", {"limit": limit}, call_id=f"h{n}")
        )
        assert outcome.error_code == "INVALID_ARGUMENT"


async def test_bad_json_and_unknown_tool_are_error_results(executor) -> None:
    assert (await executor.execute(call("get_weather", "[]"))).error_code == "INVALID_ARGUMENT"
    outcome = await executor.execute(call("teleport", {}, call_id="c2"))
    assert (outcome.status, outcome.error_code) == ("ERROR", "NOT_FOUND")


async def test_ledger_tools_need_an_agent(executor, memory_ledger) -> None:
    outcome = await executor.execute(call("check_balance", {}, agent=""))
    assert outcome.error_code == "PERMISSION_DENIED"
    assert memory_ledger.requests == []


# -- built-in ledger tools -------------------------------------------------------------------


async def test_check_balance_is_own_balance(executor, memory_ledger) -> None:
    outcome = await executor.execute(call("check_balance", {}, agent="agent_beta"))
    assert json.loads(outcome.result_json) == {
        "agent_id": "agent_beta",
        "balance": "50.00",
        "asset": "P2E",
    }
    assert memory_ledger.requests[-1] == {
        "op": "balance",
        "caller": "agent_beta",
        "agent_id": "agent_beta",
    }


async def test_failed_and_pending_transfers(executor, memory_ledger) -> None:
    memory_ledger.next_status = "failed"
    failed = await executor.execute(call("transfer_funds", {"to_agent": "agent_beta", "amount": 1}))
    assert (failed.status, failed.error_code) == ("ERROR", "WALLET_FROZEN")
    memory_ledger.next_status = "pending_approval"
    pending = await executor.execute(
        call("transfer_funds", {"to_agent": "agent_beta", "amount": 1}, call_id="c2")
    )
    body = json.loads(pending.result_json)
    assert pending.ok and body["status"] == "pending_approval" and "note" in body


async def test_insufficient_funds_is_the_ledger_reason(executor) -> None:
    args = {"to_agent": "agent_beta", "amount": "1000"}
    outcome = await executor.execute(call("transfer_funds", args))
    assert (outcome.status, outcome.error_code) == ("ERROR", "INSUFFICIENT_FUNDS")


async def test_transaction_history_rows(executor) -> None:
    await executor.execute(call("transfer_funds", {"to_agent": "agent_beta", "amount": 3}))
    outcome = await executor.execute(
        call("transaction_history", {}, call_id="c2", agent="agent_beta")
    )
    body = json.loads(outcome.result_json)
    assert body["count"] == 1
    row = body["transactions"][0]
    assert (row["direction"], row["counterparty"], row["amount"]) == (
        "received",
        "agent_alpha",
        "3.00",
    )


async def test_delegate_is_refused_here(executor) -> None:
    outcome = await executor.execute(call("delegate", {"agent_id": "b", "message": "hi"}))
    assert outcome.error_code == "FAILED_PRECONDITION"
    assert outcome.error_message == "delegate is executed by the orchestrator"


# -- idempotency ---------------------------------------------------------------------------


async def test_repeated_call_id_returns_the_stored_result(
    harness, executor, store, memory_ledger
) -> None:
    request = call("transfer_funds", {"to_agent": "agent_beta", "amount": 10}, call_id="t1")
    first = await executor.execute(request)
    second = await executor.execute(request)
    restarted = Executor(harness.registry, store, ledger=memory_ledger)
    third = await restarted.execute(request)
    assert first == second == third
    assert len(memory_ledger.transfers) == 1
    assert memory_ledger.balances["agent_alpha"] == Decimal("90.00")
    record = await store.get("t1")
    assert record is not None
    assert (record.tool, record.agent, record.conversation, record.status) == (
        "transfer_funds",
        "agent_alpha",
        "conv",
        "OK",
    )
    assert json.loads(record.args) == {"amount": "10", "reason": "", "to_agent": "agent_beta"}


async def test_concurrent_deliveries_of_one_call_run_it_once(harness, executor) -> None:
    request = call("special", {"note": "gate"}, call_id="g1")
    runs = [asyncio.create_task(executor.execute(request)) for _ in range(3)]
    await asyncio.sleep(0.01)
    harness.gate.set()
    outcomes = await asyncio.gather(*runs)
    assert harness.calls == ["g1"]
    assert all(o == outcomes[0] and o.ok for o in outcomes)


async def test_call_id_reused_for_another_call_is_refused(executor) -> None:
    await executor.execute(call("pay_none", {"note": "a"}, call_id="same"))
    other_tool = await executor.execute(call("get_weather", {"city": "Rome"}, call_id="same"))
    assert other_tool.error_code == "ALREADY_EXISTS"
    other_agent = await executor.execute(call("pay_none", {"note": "a"}, call_id="same", agent="b"))
    assert other_agent.error_code == "ALREADY_EXISTS"
    other_conv = call("pay_none", {"note": "a"}, call_id="same", conversation="elsewhere")
    assert (await executor.execute(other_conv)).error_code == "ALREADY_EXISTS"


async def test_transient_failures_are_not_stored(harness, executor, memory_ledger, store) -> None:
    memory_ledger.down = True
    request = call("check_balance", {}, call_id="b1")
    down = await executor.execute(request)
    assert down.error_code == "DEPENDENCY_UNAVAILABLE"
    assert await store.get("b1") is None
    memory_ledger.down = False
    assert (await executor.execute(request)).ok


async def test_timeout_and_crash_are_error_results_not_stored(harness, executor, store) -> None:
    slow = await executor.execute(call("special", {"note": "slow"}, call_id="s1"))
    assert slow.error_code == "DEADLINE_EXCEEDED" and "0.2s" in slow.error_message
    assert 150 <= slow.duration_ms < 2000
    broken = await executor.execute(call("special", {"note": "boom"}, call_id="s2"))
    assert broken.error_code == "INTERNAL"
    assert "bug in the tool" not in broken.error_message
    assert await store.get("s1") is None and await store.get("s2") is None


async def test_store_keeps_the_first_result(store: ExecutionStore) -> None:
    first = ExecutionRecord("x", "t", "{}", "a", "c", "OK", result='{"n": 1}')
    second = ExecutionRecord("x", "t", "{}", "a", "c", "OK", result='{"n": 2}')
    assert await store.save(first) is first
    kept = await store.save(second)
    assert kept.result == '{"n": 1}'


# -- cache ---------------------------------------------------------------------------------


async def test_side_effect_free_results_are_cached_until_ttl(harness, executor) -> None:
    first = await executor.execute(call("lookup", {"note": "k"}, call_id="l1"))
    second = await executor.execute(call("lookup", {"note": "k"}, call_id="l2", agent="x"))
    assert first.ok and not first.cached
    assert second.cached and second.result_json == first.result_json
    assert json.loads(first.result_json) == {"value": "k", "price": "1.10"}
    assert harness.calls == ["l1"]
    harness.now += 61
    third = await executor.execute(call("lookup", {"note": "k"}, call_id="l3"))
    assert not third.cached and harness.calls == ["l1", "l3"]


async def test_errors_are_not_cached(harness, executor) -> None:
    for n in range(2):
        outcome = await executor.execute(call("lookup", {"note": "fail"}, call_id=f"f{n}"))
        assert outcome.error_code == "BAD_LOOKUP"
    assert harness.calls == ["f0", "f1"]


async def test_weather_is_cached_by_canonical_arguments(executor) -> None:
    first = await executor.execute(call("get_weather", '{"city": "Berlin"}', call_id="w1"))
    again = await executor.execute(call("get_weather", '{ "city" : " Berlin" }', call_id="w2"))
    assert again.cached and again.result_json == first.result_json


def test_cache_evicts_oldest() -> None:
    cache = ResultCache(max_entries=2, clock=lambda: 0.0)
    for key in ("a", "b", "c"):
        cache.put(key, key.upper(), 10)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "B", "C")
    cache.put("d", "D", 0)
    assert cache.get("d") is None and len(cache) == 2


# -- dedup ---------------------------------------------------------------------------------


async def test_strict_refuses_an_identical_call_in_the_conversation(harness, executor) -> None:
    assert (await executor.execute(call("pay_strict", {"note": "x"}, call_id="p1"))).ok
    repeat = await executor.execute(call("pay_strict", {"note": "x"}, call_id="p2"))
    assert (repeat.status, repeat.error_code) == ("ERROR", "DUPLICATE_CALL")
    assert "p1" in repeat.error_message
    assert (await executor.execute(call("pay_strict", {"note": "y"}, call_id="p3"))).ok
    other_conv = call("pay_strict", {"note": "x"}, call_id="p4", conversation="other")
    assert (await executor.execute(other_conv)).ok
    other_agent = call("pay_strict", {"note": "x"}, call_id="p5", agent="agent_beta")
    assert (await executor.execute(other_agent)).ok
    assert harness.calls == ["p1", "p3", "p4", "p5"]
    # the refusal itself is stored: a redelivery of p2 is refused the same way
    assert (await executor.execute(call("pay_strict", {"note": "x"}, call_id="p2"))) == repeat


async def test_strict_concurrent_duplicates_run_once(harness, executor) -> None:
    outcomes = await asyncio.gather(
        *(executor.execute(call("pay_strict", {"note": "x"}, call_id=f"q{n}")) for n in range(4))
    )
    assert sum(o.ok for o in outcomes) == 1
    assert len(harness.calls) == 1


async def test_penalty_runs_and_flags(harness, executor) -> None:
    first = await executor.execute(call("pay_penalty", {"note": "x"}, call_id="p1"))
    second = await executor.execute(call("pay_penalty", {"note": "x"}, call_id="p2"))
    assert harness.calls == ["p1", "p2"]
    assert "duplicate_of" not in json.loads(first.result_json)
    body = json.loads(second.result_json)
    assert body["duplicate_of"] == "p1" and body["paid"] == "x" and "warning" in body


async def test_none_policy_runs_every_call(harness, executor) -> None:
    for n in range(2):
        outcome = await executor.execute(call("pay_none", {"note": "x"}, call_id=f"n{n}"))
        assert "duplicate_of" not in json.loads(outcome.result_json)
    assert harness.calls == ["n0", "n1"]


async def test_failed_calls_do_not_count_as_duplicates(executor, memory_ledger) -> None:
    args = {"to_agent": "agent_beta", "amount": "150"}
    refused = await executor.execute(call("transfer_funds", args, call_id="t1"))
    assert refused.error_code == "INSUFFICIENT_FUNDS"
    memory_ledger.balances["agent_alpha"] = Decimal("200")
    retried = await executor.execute(call("transfer_funds", args, call_id="t2"))
    assert retried.ok and "duplicate_of" not in json.loads(retried.result_json)
