"""The turn loop with a scripted model and an in-memory tool dispatcher."""

from __future__ import annotations

import asyncio
import json

import pytest

from p2e_kit.appconfig import AgentConfig
from p2e_kit.errors import DependencyUnavailable, FailedPrecondition, InvalidArgument, NotFound
from p2e_orchestrator.llm.port import ModelReply
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.testing import InMemoryToolDispatcher, ScriptedModel, harness, tool_call
from p2e_orchestrator.tool_catalog import ToolSpec
from p2e_orchestrator.tool_dispatch import ToolOutcome
from p2e_orchestrator.turn_context import TurnLimits, TurnSummary

AGENTS = [
    AgentConfig(id="agent_alpha", tools=["get_weather", "check_balance", "delegate"]),
    AgentConfig(id="agent_helper", tools=["get_weather"], behavior_template="helpful_assistant"),
    AgentConfig(id="treasurer", tools=["delegate"], behavior_template="financial_expert"),
]
OBJECT = {"type": "object", "properties": {}}
TOOLS = [
    ToolSpec(
        "get_weather",
        "Weather of a city",
        {"type": "object", "properties": {"city": {"type": "string"}}},
    ),
    ToolSpec("check_balance", "Own balance", OBJECT),
    ToolSpec("transfer_funds", "Pay", OBJECT),
]


def weather(invocation):
    city = json.loads(invocation.arguments_json)["city"]
    return ToolOutcome.success(json.dumps({"city": city, "temperature_c": len(city)}))


async def make(sqlite_url, model, handlers=None, **limits):
    dispatcher = InMemoryToolDispatcher(handlers or {"get_weather": weather})
    limits.setdefault("tool_timeout_seconds", 2.0)
    return await harness(
        sqlite_url,
        agents=AGENTS,
        model=model,
        dispatcher=dispatcher,
        tools=TOOLS,
        limits=TurnLimits(poll_seconds=0.2, **limits),
    )


async def run(h, ref, text, request_id=""):
    events = [e async for e in h.turns.send(ref, text, request_id)]
    return [e for e in events if isinstance(e, r.State)], events[-1]


async def collect(events, into):
    async for event in events:
        into.append(event)


async def test_plain_answer(sqlite_url):
    h = await make(sqlite_url, ScriptedModel(replies=[ModelReply("Hi! I can check the weather.")]))
    conv = await h.conversations.create("agent_alpha", "plain")
    states, summary = await run(h, "plain", "Hello! What can you do?")
    assert [s.kind for s in states] == [r.USER_MESSAGE, r.ASSISTANT_MESSAGE, r.FINISHED]
    assert summary == TurnSummary("Hi! I can check the weather.", model_calls=1, tool_calls=0)
    call = h.model.calls[0]
    assert call.model == "resolved/openai/gpt-4o"
    assert call.messages[0]["role"] == "system" and "agent_alpha" in call.messages[0]["content"]
    assert call.messages[1:] == [{"role": "user", "content": "Hello! What can you do?"}]
    assert sorted(t["function"]["name"] for t in call.tools) == [
        "check_balance",
        "delegate",
        "get_weather",
    ]
    assert [s.id for s in h.publisher.states] == [s.id for s in states]
    assert (await h.store.get_conversation(conv.id)).state == r.IDLE
    await h.close()


async def test_every_tool_call_of_a_reply_runs_concurrently(sqlite_url):
    both_started = asyncio.Barrier(2)

    async def slow_weather(invocation):
        await asyncio.wait_for(both_started.wait(), 1.0)  # fails unless both run at once
        return weather(invocation)

    model = ScriptedModel(
        replies=[
            ModelReply(
                "Looking up both.",
                [
                    tool_call("get_weather", {"city": "Paris"}, "m1"),
                    tool_call("get_weather", {"city": "Tokyo"}, "m2"),
                ],
            ),
            ModelReply("Paris 5, Tokyo 5."),
        ]
    )
    h = await make(sqlite_url, model, {"get_weather": slow_weather})
    conv = await h.conversations.create("agent_alpha", "two")
    states, summary = await run(h, "two", "Weather in Paris and Tokyo?")
    kinds = [s.kind for s in states]
    assert kinds == [
        r.USER_MESSAGE, r.ASSISTANT_MESSAGE, r.TOOL_CALL, r.TOOL_CALL,
        r.TOOL_RESULT, r.TOOL_RESULT, r.ASSISTANT_MESSAGE, r.FINISHED,
    ]  # fmt: skip
    calls, results = states[2:4], states[4:6]
    assert [c.target for c in calls] == ["get_weather", "get_weather"]
    assert [c.call_id for c in calls] == [c.id for c in calls]
    assert [res.call_id for res in results] == [c.id for c in calls]
    assert [json.loads(res.data_json)["city"] for res in results] == ["Paris", "Tokyo"]
    assert summary.model_calls == 2 and summary.tool_calls == 2
    invocations = h.dispatcher.invocations
    assert {i.call_id for i in invocations} == {c.id for c in calls}
    assert all(i.agent_id == "agent_alpha" and i.conversation_id == conv.id for i in invocations)
    second = h.model.calls[1].messages
    assert [m["role"] for m in second[-3:]] == ["assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in second[-2:]] == ["m1", "m2"]
    for call in calls:
        effect = await h.store.get_effect(call.id)
        assert effect.status == r.COMPLETED and effect.result["ok"] is True
    await h.close()


async def test_tool_not_offered_is_refused_without_dispatch(sqlite_url):
    model = ScriptedModel(
        replies=[
            ModelReply(
                None, [tool_call("transfer_funds", {"to_agent": "agent_beta", "amount": "5"})]
            ),
            ModelReply("I cannot pay."),
        ]
    )
    h = await make(sqlite_url, model)
    await h.conversations.create("agent_alpha", "refused")
    states, _ = await run(h, "refused", "Pay beta 5")
    result = next(s for s in states if s.kind == r.TOOL_RESULT)
    assert result.is_error and json.loads(result.data_json)["error"] == "PERMISSION_DENIED"
    assert h.dispatcher.invocations == []
    await h.close()


async def test_tool_timeout_and_bad_arguments_become_error_results(sqlite_url):
    async def never(invocation):
        await asyncio.sleep(10)

    model = ScriptedModel(
        replies=[
            ModelReply(
                None,
                [tool_call("get_weather", {"city": "Oslo"}), tool_call("check_balance", "[1]")],
            ),
            ModelReply("Both failed."),
        ]
    )
    h = await make(sqlite_url, model, {"get_weather": never}, tool_timeout_seconds=0.2)
    await h.conversations.create("agent_alpha", "slow")
    states, summary = await run(h, "slow", "Weather in Oslo?")
    results = [s for s in states if s.kind == r.TOOL_RESULT]
    assert [json.loads(s.data_json)["error"] for s in results] == [
        "DEADLINE_EXCEEDED",
        "INVALID_ARGUMENT",
    ]
    assert summary.text == "Both failed."
    await h.close()


async def test_model_call_budget(sqlite_url):
    def looping(messages, tools):
        return ModelReply(None, [tool_call("get_weather", {"city": "Rome"})])

    h = await make(sqlite_url, ScriptedModel(looping), max_model_calls=3)
    await h.conversations.create("agent_alpha", "loop")
    states, summary = await run(h, "loop", "Loop forever")
    assert summary.model_calls == 3 and summary.tool_calls == 3
    assert "stopped after 3 model calls" in summary.text
    assert json.loads(states[-1].data_json)["reason"] == "MAX_MODEL_CALLS"
    await h.close()


async def test_model_failure_is_unavailable_and_frees_the_conversation(sqlite_url):
    def broken(messages, tools):
        raise ConnectionError("provider down")

    h = await make(sqlite_url, ScriptedModel(broken))
    conv = await h.conversations.create("agent_alpha", "down")
    seen = []
    with pytest.raises(DependencyUnavailable, match="provider down"):
        await collect(h.turns.send("down", "hello"), seen)
    assert [s.kind for s in seen] == [r.USER_MESSAGE, r.FINISHED]
    assert seen[-1].is_error
    assert (await h.store.get_conversation(conv.id)).state == r.IDLE
    await h.close()


async def test_idempotent_send_and_preconditions(sqlite_url):
    gate = asyncio.Event()

    async def gated(invocation):
        await gate.wait()
        return weather(invocation)

    model = ScriptedModel(
        replies=[
            ModelReply(None, [tool_call("get_weather", {"city": "Lima"})]),
            ModelReply("Sunny."),
        ]
    )
    h = await make(sqlite_url, model, {"get_weather": gated})
    conv = await h.conversations.create("agent_alpha", "idem", request_id="create-1")
    assert (
        await h.conversations.create("agent_alpha", "idem", request_id="create-1")
    ).id == conv.id
    with pytest.raises(InvalidArgument):
        await run(h, "idem", "   ")
    with pytest.raises(NotFound):
        await run(h, "nope", "hi")
    user = await h.turns.start_turn(conv, "Weather in Lima?", request_id="send-1")
    with pytest.raises(FailedPrecondition, match="already running"):
        await h.turns.start_turn(conv, "another", request_id="send-2")
    assert (await h.turns.start_turn(conv, "Weather in Lima?", request_id="send-1")).id == user.id
    gate.set()
    first, _ = await run(h, "idem", "Weather in Lima?", request_id="send-1")
    retried, summary = await run(h, "idem", "Weather in Lima?", request_id="send-1")
    assert [s.id for s in retried] == [s.id for s in first] and summary.text == "Sunny."
    stack = await h.store.visible_states(conv.active_branch_id)
    assert [s.kind for s in stack].count(r.USER_MESSAGE) == 1
    await h.conversations.cancel("idem")
    with pytest.raises(FailedPrecondition, match="cancelled"):
        await run(h, "idem", "still there?")
    await h.close()


async def test_cancel_stops_a_running_turn(sqlite_url):
    started = asyncio.Event()

    async def stuck(invocation):
        started.set()
        await asyncio.sleep(30)

    model = ScriptedModel(replies=[ModelReply(None, [tool_call("get_weather", {"city": "Nuuk"})])])
    h = await make(sqlite_url, model, {"get_weather": stuck}, tool_timeout_seconds=60)
    conv = await h.conversations.create("agent_alpha", "cancel-me")
    user = await h.turns.start_turn(conv, "Weather in Nuuk?")
    await asyncio.wait_for(started.wait(), 2)
    cancelled = await h.conversations.cancel("cancel-me")
    assert cancelled.state == r.CANCELLED
    events = [e async for e in h.turns.follow_turn(user)]
    assert events[-2].kind == r.FINISHED and "cancelled" in events[-1].text
    await h.close()


async def test_overrides_change_tools_template_and_model(sqlite_url):
    h = await make(sqlite_url, ScriptedModel(replies=[ModelReply("ok")]))
    await h.conversations.create("agent_alpha", "ov")
    with pytest.raises(InvalidArgument, match="unknown tools"):
        await h.conversations.set_overrides("ov", {"tools": ["no_such_tool"]})
    with pytest.raises(InvalidArgument, match="unknown behavior template"):
        await h.conversations.set_overrides("ov", {"behavior_template": "pirate"})
    wanted = {
        "tools": ["check_balance"],
        "behavior_template": "weather_expert",
        "llm_model": "x/y",
        "temperature": 0.1,
    }
    await h.conversations.set_overrides("ov", wanted)
    assert await h.conversations.get_overrides("ov") == wanted
    await run(h, "ov", "hi")
    call = h.model.calls[0]
    assert [t["function"]["name"] for t in call.tools] == ["check_balance"]
    assert "weather specialist" in call.messages[0]["content"]
    assert (call.model, call.temperature) == ("resolved/x/y", 0.1)
    await h.close()


def delegating(messages, tools):
    """agent_alpha delegates to agent_helper, which answers; alpha relays the answer."""
    system, last = messages[0]["content"], messages[-1]
    if "You are agent_helper" in system:
        return ModelReply(f"helper says: {last['content']} -> sunny")
    if last["role"] == "tool":
        return ModelReply(f"relayed: {json.loads(last['content']).get('answer', last['content'])}")
    target, _, task = last["content"].partition(":")
    return ModelReply(
        None, [tool_call("delegate", {"agent_id": target.strip(), "message": task.strip()})]
    )


async def test_delegation_runs_a_child_conversation(sqlite_url):
    h = await make(sqlite_url, ScriptedModel(delegating))
    parent = await h.conversations.create("agent_alpha", "boss")
    states, summary = await run(h, "boss", "agent_helper: weather in Tokyo?")
    kinds = [s.kind for s in states]
    assert kinds == [
        r.USER_MESSAGE,
        r.ASSISTANT_MESSAGE,
        r.AGENT_CALL,
        r.AGENT_RESULT,
        r.ASSISTANT_MESSAGE,
        r.FINISHED,
    ]
    call, result = states[2], states[3]
    assert call.target == "agent_helper" and not result.is_error
    answer = json.loads(result.data_json)
    assert result.text == answer["answer"] == "helper says: weather in Tokyo? -> sunny"
    assert summary.text == f"relayed: {answer['answer']}"
    child = await h.store.get_conversation(answer["conversation_id"])
    assert (child.agent_id, child.parent_conversation_id, child.depth) == (
        "agent_helper",
        parent.id,
        1,
    )
    _, _, child_stack = await h.conversations.stack(child.id)
    assert [s.kind for s in child_stack] == [r.USER_MESSAGE, r.ASSISTANT_MESSAGE, r.FINISHED]
    await h.close()


async def test_delegation_guards(sqlite_url):
    h = await make(sqlite_url, ScriptedModel(delegating), max_delegation_depth=1)
    await h.conversations.create("agent_alpha", "guards")
    states, _ = await run(h, "guards", "agent_alpha: do it yourself")
    assert json.loads(states[3].data_json)["error"] == "DELEGATION_CYCLE"
    states, _ = await run(h, "guards", "nobody: hello")
    assert json.loads(states[3].data_json)["error"] == "NOT_FOUND"
    # treasurer (depth 1) may not delegate further with a depth limit of 1
    states, _ = await run(h, "guards", "treasurer: agent_helper: weather?")
    nested = json.loads(states[3].data_json)
    assert states[3].is_error is False and "DELEGATION_DEPTH_EXCEEDED" in nested["answer"]
    await h.close()
