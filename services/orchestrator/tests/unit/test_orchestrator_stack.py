"""Stacks and branches: append-only states, copy-free forks, rendering for the model."""

from __future__ import annotations

import json

import pytest

from p2e_kit.appconfig import AgentConfig
from p2e_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from p2e_orchestrator import rendering
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.testing import ScriptedModel, harness

AGENTS = [AgentConfig(id="agent_alpha", tools=["get_weather"])]


@pytest.fixture
async def h(sqlite_url):
    built = await harness(sqlite_url, agents=AGENTS, model=ScriptedModel(replies=[]))
    yield built
    await built.close()


async def append(h, conversation, branch_id, kind, text="", **kw):
    return await h.store.append_state(
        conversation_id=conversation.id,
        branch_id=branch_id,
        agent_id=conversation.agent_id,
        new=r.NewState(kind, text=text, **kw),
    )


async def test_states_get_consecutive_seqs_and_parent_links(h):
    conv = await h.conversations.create("agent_alpha", "c1")
    a = await append(h, conv, conv.active_branch_id, r.USER_MESSAGE, "hi")
    b = await append(h, conv, conv.active_branch_id, r.ASSISTANT_MESSAGE, "hello")
    assert (a.seq, b.seq) == (1, 2)
    assert (a.parent_id, b.parent_id) == ("", a.id)
    stack = await h.store.visible_states(conv.active_branch_id)
    assert [s.text for s in stack] == ["hi", "hello"]
    assert [s.text for s in await h.store.visible_states(conv.active_branch_id, limit=1)] == [
        "hello"
    ]


async def test_fork_sees_parent_prefix_without_copying(h):
    conv = await h.conversations.create("agent_alpha", "c2")
    main = conv.active_branch_id
    for i in range(1, 5):
        await append(h, conv, main, r.USER_MESSAGE, f"m{i}")
    conv, fork = await h.conversations.rewind("c2", 2)
    assert fork.name == "rewind-2" and fork.fork_seq == 2 and conv.active_branch_id == fork.id
    first_own = await append(h, conv, fork.id, r.USER_MESSAGE, "f3")
    assert first_own.seq == 3
    assert first_own.parent_id == (await h.store.visible_states(main))[1].id
    assert [s.text for s in await h.store.visible_states(fork.id)] == ["m1", "m2", "f3"]
    # the main line is untouched, and nothing was copied
    assert [s.text for s in await h.store.visible_states(main)] == ["m1", "m2", "m3", "m4"]
    # a fork of a fork whose cut lies before the first fork point
    conv, nested = await h.conversations.rewind("c2", 1, branch_name="early")
    await append(h, conv, nested.id, r.USER_MESSAGE, "n2")
    assert [s.text for s in await h.store.visible_states(nested.id)] == ["m1", "n2"]
    _, branches = await h.conversations.branches("c2")
    assert [(b.name, b.head_seq) for b in branches] == [("main", 4), ("rewind-2", 3), ("early", 2)]


async def test_rewind_rules(h):
    conv = await h.conversations.create("agent_alpha", "c3")
    await append(h, conv, conv.active_branch_id, r.USER_MESSAGE, "m1")
    with pytest.raises(InvalidArgument) as bad:
        await h.conversations.rewind("c3", 5)
    assert bad.value.violations[0].field == "seq"
    _, first = await h.conversations.rewind("c3", 1, request_id="rw-1")
    _, again = await h.conversations.rewind("c3", 1, request_id="rw-1")
    assert again.id == first.id
    _, second = await h.conversations.rewind("c3", 1)
    assert second.name == "rewind-1-2"
    with pytest.raises(AlreadyExists):
        await h.conversations.rewind("c3", 0, branch_name="rewind-1")
    await h.store.update_conversation(conv.id, state=r.RUNNING)
    with pytest.raises(FailedPrecondition):
        await h.conversations.rewind("c3", 0)
    with pytest.raises(FailedPrecondition):
        await h.conversations.checkout("c3", "main")


async def test_checkout_by_name_and_id(h):
    conv = await h.conversations.create("agent_alpha", "c4")
    await append(h, conv, conv.active_branch_id, r.USER_MESSAGE, "m1")
    _, fork = await h.conversations.rewind("c4", 0)
    conv, main = await h.conversations.checkout("c4", "main")
    assert conv.active_branch_id == main.id
    conv, back = await h.conversations.checkout(conv.id, fork.id)
    assert back.id == fork.id == conv.active_branch_id
    with pytest.raises(NotFound):
        await h.conversations.checkout("c4", "nope")


def state(kind, seq, text="", call_id="", data=None, target=""):
    return r.State(
        id=f"st{seq}",
        conversation_id="c",
        branch_id="b",
        seq=seq,
        parent_id="",
        agent_id="agent_alpha",
        kind=kind,
        text=text,
        call_id=call_id,
        target=target,
        data_json=json.dumps(data) if data is not None else "",
        is_error=False,
        created=r.utcnow(),
    )


def asked(*calls):
    return {
        "tool_calls": [{"id": m, "call_id": c, "name": n, "arguments": a} for m, c, n, a in calls]
    }


def test_render_maps_tool_results_to_the_models_call_ids():
    stack = [
        state(r.USER_MESSAGE, 1, "weather?"),
        state(
            r.ASSISTANT_MESSAGE,
            2,
            "",
            data=asked(
                ("m1", "st3", "get_weather", '{"city":"Paris"}'), ("m2", "st4", "get_weather", "{}")
            ),
        ),
        state(r.TOOL_CALL, 3, call_id="st3", target="get_weather"),
        state(r.TOOL_CALL, 4, call_id="st4", target="get_weather"),
        state(r.TOOL_RESULT, 5, call_id="st4", data={"temp": 2}),
        state(r.TOOL_RESULT, 6, call_id="st3", data={"temp": 1}),
        state(r.ASSISTANT_MESSAGE, 7, "cold"),
        state(r.FINISHED, 8, "cold"),
    ]
    messages = rendering.render_messages("sys", stack)
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert messages[2]["content"] is None
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["m1", "m2"]
    assert messages[2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert (messages[3]["tool_call_id"], json.loads(messages[3]["content"])) == ("m2", {"temp": 2})
    assert (messages[4]["tool_call_id"], messages[4]["name"]) == ("m1", "get_weather")


def test_render_closes_calls_that_never_got_a_result():
    stack = [
        state(r.USER_MESSAGE, 1, "go"),
        state(r.ASSISTANT_MESSAGE, 2, "", data=asked(("m1", "st3", "check_balance", "{}"))),
        state(r.TOOL_CALL, 3, call_id="st3", target="check_balance"),
        state(r.USER_MESSAGE, 4, "again"),
    ]
    messages = rendering.render_messages("sys", stack)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert json.loads(messages[3]["content"])["error"] == "NO_RESULT"
    turn = stack[rendering.turn_start(stack) :]
    assert [s.text for s in turn] == ["again"] and rendering.unanswered_calls(turn) == []
    assert [s.id for s in rendering.unanswered_calls(stack[1:3])] == ["st3"]
