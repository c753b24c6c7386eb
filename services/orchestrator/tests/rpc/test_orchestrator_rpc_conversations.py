"""Agents, conversations, branches, overrides, cancel and the error rows, over a real socket."""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import pytest

from p2e_kit.natsd import free_port
from p2e_kit.status import decode
from p2engine.orchestrator.v1 import orchestrator_pb2 as pb
from p2engine.orchestrator.v1 import orchestrator_service_pb2 as svc


async def consume(call):
    if hasattr(call, "__aiter__"):
        return [item async for item in call]
    return await call


async def error_of(call):
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await consume(call)
    return decode(failed.value)


async def send(o, conversation, text, request_id=""):
    request = svc.SendMessageRequest(conversation=conversation, text=text, request_id=request_id)
    return [reply async for reply in o.conversations.SendMessage(request)]


async def test_agents(orchestrator):
    o = orchestrator
    listed = await o.agents.ListAgents(svc.ListAgentsRequest())
    assert [a.id for a in listed.agents] == ["agent_alpha", "agent_helper"]
    page = await o.agents.ListAgents(svc.ListAgentsRequest(page_size=1))
    assert [a.id for a in page.agents] == ["agent_alpha"] and page.next_page_token == "1"
    helper = await o.agents.GetAgent(svc.GetAgentRequest(id="agent_helper"))
    assert (helper.behavior_template, helper.llm_model, helper.effective_model) == (
        "helpful_assistant", "openai/gpt-4o", "offline/p2e",
    )  # fmt: skip
    assert list(helper.tools) == ["get_weather", "check_balance"]
    assert (await error_of(o.agents.GetAgent(svc.GetAgentRequest(id="ghost")))).code == "NOT_FOUND"


async def test_create_get_list(orchestrator):
    c = orchestrator.conversations
    first = await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_alpha", name="one")
    )
    assert first.state == pb.CONVERSATION_STATE_IDLE and first.depth == 0 and first.active_branch_id
    again = await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_helper", request_id="r1")
    )
    replay = await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_helper", request_id="r1")
    )
    assert replay.id == again.id and again.name == again.id
    third = await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_helper", name="three")
    )
    assert (await c.GetConversation(svc.GetConversationRequest(conversation="one"))).id == first.id
    assert (
        await c.GetConversation(svc.GetConversationRequest(conversation=first.id))
    ).name == "one"
    listed = await c.ListConversations(svc.ListConversationsRequest())
    assert [x.id for x in listed.conversations] == [third.id, again.id, first.id]
    page1 = await c.ListConversations(svc.ListConversationsRequest(page_size=2))
    page2 = await c.ListConversations(
        svc.ListConversationsRequest(page_size=2, page_token=page1.next_page_token)
    )
    assert [x.id for x in [*page1.conversations, *page2.conversations]] == [
        third.id,
        again.id,
        first.id,
    ]
    assert page2.next_page_token == ""
    helpers = await c.ListConversations(svc.ListConversationsRequest(agent_id="agent_helper"))
    assert {x.id for x in helpers.conversations} == {third.id, again.id}


async def test_error_rows(orchestrator):
    c = orchestrator.conversations
    await c.CreateConversation(svc.CreateConversationRequest(agent_id="agent_alpha", name="taken"))
    rows = [
        (c.CreateConversation(svc.CreateConversationRequest(agent_id="ghost")), "NOT_FOUND"),
        (
            c.CreateConversation(
                svc.CreateConversationRequest(agent_id="agent_alpha", name="taken")
            ),
            "ALREADY_EXISTS",
        ),
        (
            c.CreateConversation(
                svc.CreateConversationRequest(agent_id="agent_alpha", name="bad name")
            ),
            "INVALID_ARGUMENT",
        ),
        (c.GetConversation(svc.GetConversationRequest(conversation="nope")), "NOT_FOUND"),
        (
            c.SendMessage(svc.SendMessageRequest(conversation="taken", text="  ")),
            "INVALID_ARGUMENT",
        ),
        (c.SendMessage(svc.SendMessageRequest(conversation="nope", text="hi")), "NOT_FOUND"),
        (c.GetStack(svc.GetStackRequest(conversation="nope")), "NOT_FOUND"),
        (c.GetStack(svc.GetStackRequest(conversation="taken", branch_id="nope")), "NOT_FOUND"),
        (c.ListBranches(svc.ListBranchesRequest(conversation="nope")), "NOT_FOUND"),
        (c.Rewind(svc.RewindRequest(conversation="taken", seq=9)), "INVALID_ARGUMENT"),
        (c.Checkout(svc.CheckoutRequest(conversation="taken", branch="nope")), "NOT_FOUND"),
        (c.GetOverrides(svc.GetOverridesRequest(conversation="nope")), "NOT_FOUND"),
        (c.WatchConversation(svc.WatchConversationRequest(conversation="nope")), "NOT_FOUND"),
        (c.CancelConversation(svc.CancelConversationRequest(conversation="nope")), "NOT_FOUND"),
        (
            c.RespondToUser(svc.RespondToUserRequest(conversation="taken", text="yes")),
            "UNIMPLEMENTED",
        ),
    ]
    for call, code in rows:
        assert (await error_of(call)).code == code
    bad_tool = pb.Overrides(tools=["get_weather", "teleport"])
    details = await error_of(
        c.SetOverrides(svc.SetOverridesRequest(conversation="taken", overrides=bad_tool))
    )
    assert (
        details.code == "INVALID_ARGUMENT"
        and details.field_violations[0].field == "overrides.tools"
    )
    bad_template = pb.Overrides(behavior_template="pirate")
    details = await error_of(
        c.SetOverrides(svc.SetOverridesRequest(conversation="taken", overrides=bad_template))
    )
    assert "unknown behavior template" in details.message
    assert (
        "human-in-the-loop"
        in (await error_of(c.RespondToUser(svc.RespondToUserRequest(conversation="x")))).message
    )


async def test_overrides_round_trip(orchestrator):
    c = orchestrator.conversations
    await c.CreateConversation(svc.CreateConversationRequest(agent_id="agent_alpha", name="ov"))
    empty = await c.GetOverrides(svc.GetOverridesRequest(conversation="ov"))
    assert empty == pb.Overrides() and not empty.HasField("temperature")
    wanted = pb.Overrides(
        behavior_template="weather_expert", tools=["get_weather"], temperature=0.3
    )
    assert (
        await c.SetOverrides(svc.SetOverridesRequest(conversation="ov", overrides=wanted)) == wanted
    )
    assert await c.GetOverrides(svc.GetOverridesRequest(conversation="ov")) == wanted
    await send(orchestrator, "ov", "hello")
    call = orchestrator.model.calls[-1]
    assert [t["function"]["name"] for t in call.tools] == [
        "get_weather"
    ] and call.temperature == 0.3


async def test_rewind_checkout_and_stacks(orchestrator):
    c = orchestrator.conversations
    await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_alpha", name="branchy")
    )
    await send(orchestrator, "branchy", "first")
    await send(orchestrator, "branchy", "second")
    main = (await c.GetStack(svc.GetStackRequest(conversation="branchy"))).branch
    assert (main.name, main.head_seq, main.active) == ("main", 6, True)
    fork = await c.Rewind(svc.RewindRequest(conversation="branchy", seq=3, new_branch=True))
    assert (fork.name, fork.fork_seq, fork.parent_branch_id, fork.active) == (
        "rewind-3",
        3,
        main.id,
        True,
    )
    replies = await send(orchestrator, "branchy", "another second")
    assert replies[0].state.seq == 4 and replies[0].state.branch_id == fork.id
    stack = await c.GetStack(svc.GetStackRequest(conversation="branchy"))
    assert [s.text for s in stack.states if s.kind == pb.STATE_KIND_USER_MESSAGE] == [
        "first",
        "another second",
    ]
    old = await c.GetStack(svc.GetStackRequest(conversation="branchy", branch_id=main.id, limit=2))
    assert [s.seq for s in old.states] == [5, 6] and not old.branch.active
    back = await c.Checkout(svc.CheckoutRequest(conversation="branchy", branch="main"))
    assert back.id == main.id and back.active
    branches = await c.ListBranches(svc.ListBranchesRequest(conversation="branchy"))
    assert [(b.name, b.head_seq, b.active) for b in branches.branches] == [
        ("main", 6, True),
        ("rewind-3", 6, False),
    ]


async def test_cancel(orchestrator):
    c = orchestrator.conversations
    await c.CreateConversation(svc.CreateConversationRequest(agent_id="agent_alpha", name="bye"))
    cancelled = await c.CancelConversation(svc.CancelConversationRequest(conversation="bye"))
    assert cancelled.state == pb.CONVERSATION_STATE_CANCELLED
    details = await error_of(
        c.SendMessage(svc.SendMessageRequest(conversation="bye", text="hello?"))
    )
    assert details.code == "FAILED_PRECONDITION" and details.reason == "CONVERSATION_CANCELLED"


async def test_nats_down_at_start_is_one_line_and_exit_2(tmp_path):
    env = {
        **os.environ,
        "P2E_ORCHESTRATOR_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "P2E_ORCHESTRATOR_PORT": "0",
        "P2E_ORCHESTRATOR_DATA_DIR": str(tmp_path),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2e_orchestrator", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert process.returncode == 2
    problems = [line for line in lines if " ERROR " in line or " WARNING " in line]
    assert len(problems) == 1, lines
    assert problems[0] == lines[-1]
    assert "cannot start orchestrator" in problems[0]
    assert "nats" in problems[0]
