"""A turn interrupted by a restart resumes from its stack and effects, repeating nothing."""

from __future__ import annotations

import json

from p2e_kit.appconfig import AgentConfig
from p2e_orchestrator.llm.port import ModelReply
from p2e_orchestrator.rendering import AskedCall
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.testing import InMemoryToolDispatcher, ScriptedModel, harness
from p2e_orchestrator.tool_catalog import ToolSpec
from p2e_orchestrator.tool_dispatch import ToolOutcome
from p2e_orchestrator.turn_context import TurnLimits

AGENTS = [AgentConfig(id="agent_alpha", tools=["get_weather", "check_balance"])]
TOOLS = [
    ToolSpec("get_weather", "Weather", {"type": "object", "properties": {}}),
    ToolSpec("check_balance", "Balance", {"type": "object", "properties": {}}),
]


async def interrupted_turn(store, conversation):
    """What a process that died mid-turn leaves: two calls, one of them already completed."""

    async def append(new, **kw):
        return await store.append_state(
            conversation_id=conversation.id,
            branch_id=conversation.active_branch_id,
            agent_id="agent_alpha",
            new=new,
            **kw,
        )

    await store.update_conversation(conversation.id, state=r.RUNNING)
    await append(r.NewState(r.USER_MESSAGE, text="weather and balance?"))
    calls = [
        AskedCall("m1", "st_call_weather", "get_weather", '{"city": "Oslo"}'),
        AskedCall("m2", "st_call_balance", "check_balance", "{}"),
    ]
    data = json.dumps({"tool_calls": [c.to_dict() for c in calls]})
    await append(r.NewState(r.ASSISTANT_MESSAGE, data_json=data))
    for call in calls:
        await append(
            r.NewState(
                r.TOOL_CALL,
                id=call.call_id,
                call_id=call.call_id,
                target=call.name,
                data_json=call.arguments,
            ),
            effect=r.NewEffect("tool"),
        )
    done = ToolOutcome.success('{"balance": "100.00"}')
    await store.complete_effect("st_call_balance", done.to_dict())


async def test_restart_resumes_pending_calls_and_reuses_completed_ones(sqlite_url):
    first = await harness(sqlite_url, agents=AGENTS, model=ScriptedModel(replies=[]), tools=TOOLS)
    conversation = await first.conversations.create("agent_alpha", "crashy")
    await interrupted_turn(first.store, conversation)
    await first.close()

    dispatcher = InMemoryToolDispatcher(
        {"get_weather": lambda inv: ToolOutcome.success('{"temp": 3}')}
    )
    model = ScriptedModel(replies=[ModelReply("Oslo 3C, balance 100.00")])
    second = await harness(
        sqlite_url,
        agents=AGENTS,
        model=model,
        dispatcher=dispatcher,
        tools=TOOLS,
        limits=TurnLimits(poll_seconds=0.2),
    )
    assert await second.turns.resume_interrupted() == 1
    stack = await second.store.visible_states(conversation.active_branch_id)
    user = next(s for s in stack if s.kind == r.USER_MESSAGE)
    finished = await second.turns.wait_turn(user)
    assert finished.text == "Oslo 3C, balance 100.00"
    # only the pending call ran again, with its original id
    assert [i.call_id for i in dispatcher.invocations] == ["st_call_weather"]
    stack = await second.store.visible_states(conversation.active_branch_id)
    results = [s for s in stack if s.kind == r.TOOL_RESULT]
    assert [s.call_id for s in results] == ["st_call_weather", "st_call_balance"]
    assert [m["role"] for m in model.calls[0].messages[-3:]] == ["assistant", "tool", "tool"]
    assert (await second.store.get_conversation(conversation.id)).state == r.IDLE
    assert await second.turns.resume_interrupted() == 0
    await second.close()


async def test_a_finished_but_still_running_conversation_is_just_released(sqlite_url):
    h = await harness(sqlite_url, agents=AGENTS, model=ScriptedModel(replies=[]), tools=TOOLS)
    conversation = await h.conversations.create("agent_alpha", "stale")
    await h.store.update_conversation(conversation.id, state=r.RUNNING)
    assert await h.turns.resume_interrupted() == 0
    assert (await h.store.get_conversation(conversation.id)).state == r.IDLE
    await h.close()
