"""SendMessage and WatchConversation over a real socket, with tools dispatched via JetStream."""

from __future__ import annotations

import asyncio
import json

import grpc
import nats
import pytest
from google.protobuf.json_format import Parse
from nats.js.api import DeliverPolicy

from p2e_kit.status import decode
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.orchestrator.v1 import events_pb2 as orch_events
from p2engine.orchestrator.v1 import orchestrator_pb2 as pb
from p2engine.orchestrator.v1 import orchestrator_service_pb2 as svc

K = pb.StateKind


async def create(o, name, agent="agent_alpha"):
    return await o.conversations.CreateConversation(
        svc.CreateConversationRequest(agent_id=agent, name=name)
    )


async def send(o, conversation, text, request_id=""):
    request = svc.SendMessageRequest(conversation=conversation, text=text, request_id=request_id)
    replies = [reply async for reply in o.conversations.SendMessage(request)]
    states = [reply.state for reply in replies if reply.HasField("state")]
    assert replies[-1].HasField("finished")
    return states, replies[-1].finished


async def collect(stream, into):
    async for reply in stream:
        into.append(reply.state)


async def from_stream(nats_url, subject, count):
    """`count` messages of a JetStream subject, read by an independent client."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        return [await sub.next_msg(timeout=5) for _ in range(count)]
    finally:
        await nc.close()


async def test_send_message_runs_both_tool_calls_through_jetstream(orchestrator):
    o = orchestrator
    conversation = await create(o, "weather-chat")
    states, finished = await send(o, "weather-chat", "weather in Paris and Tokyo")
    assert [s.kind for s in states] == [
        K.STATE_KIND_USER_MESSAGE, K.STATE_KIND_ASSISTANT_MESSAGE, K.STATE_KIND_TOOL_CALL,
        K.STATE_KIND_TOOL_CALL, K.STATE_KIND_TOOL_RESULT, K.STATE_KIND_TOOL_RESULT,
        K.STATE_KIND_ASSISTANT_MESSAGE, K.STATE_KIND_FINISHED,
    ]  # fmt: skip
    assert [s.seq for s in states] == list(range(1, 9))
    calls, results = states[2:4], states[4:6]
    assert [json.loads(r.data_json)["city"] for r in results] == ["Paris", "Tokyo"]
    assert {json.loads(r.data_json)["ran_as"] for r in results} == {"agent_alpha"}
    assert (finished.model_calls, finished.tool_calls) == (2, 2)
    assert finished.text.startswith("Done: ") and finished.text == states[-1].text
    # the worker got one request per call: call id = the call state's id = Nats-Msg-Id
    seen = {req.call_id: (req, headers) for req, headers in o.worker.requests}
    for call in calls:
        request, headers = seen[call.id]
        assert call.call_id == call.id and headers["Nats-Msg-Id"] == call.id
        assert (request.agent_id, request.conversation_id, request.state_id) == (
            "agent_alpha",
            conversation.id,
            call.id,
        )
        assert (
            request.branch_id == conversation.active_branch_id
            and request.tool_name == "get_weather"
        )
    # every state is on the artifact bus, in order, linked to its predecessor
    messages = await from_stream(o.nats_url, f"p2e.artifacts.{conversation.id}.>", len(states))
    previous = ""
    for state, msg in zip(states, messages, strict=True):
        artifact = artifacts_pb2.Artifact.FromString(msg.data)
        assert msg.headers["Nats-Msg-Id"] == artifact.id == state.id
        assert msg.subject == f"p2e.artifacts.{conversation.id}.{artifact.kind}"
        assert artifact.kind == pb.StateKind.Name(state.kind).removeprefix("STATE_KIND_").lower()
        assert (artifact.produced_by, artifact.content_type) == ("orchestrator", "application/json")
        assert artifact.state_seq == state.seq and list(artifact.parent_ids) == (
            [previous] if previous else []
        )
        assert Parse(artifact.payload.decode(), pb.InteractionState()) == state
        previous = state.id
    [turn_done] = await from_stream(
        o.nats_url, f"p2e.orchestrator.turn_finished.{conversation.id}", 1
    )
    assert orch_events.TurnCompleted.FromString(turn_done.data).text == finished.text


async def test_send_message_retry_with_the_same_request_id_appends_nothing(orchestrator):
    o = orchestrator
    await create(o, "retry")
    first, finished = await send(o, "retry", "weather in Rome", request_id="req-1")
    again, finished_again = await send(o, "retry", "weather in Rome", request_id="req-1")
    assert [s.id for s in again] == [s.id for s in first] and finished_again == finished
    stack = await o.conversations.GetStack(svc.GetStackRequest(conversation="retry"))
    assert [s.id for s in stack.states] == [s.id for s in first]
    assert len(o.worker.requests) == 1


async def test_watch_resumes_after_a_seq_and_follows_live_turns(orchestrator):
    o = orchestrator
    await create(o, "watched")
    first, _ = await send(o, "watched", "hello")
    assert [s.seq for s in first] == [1, 2, 3]
    call = o.conversations.WatchConversation(
        svc.WatchConversationRequest(conversation="watched", after_seq=1)
    )
    seen = [await call.read(), await call.read()]
    assert [s.id for s in seen] == [s.id for s in first[1:]]
    second, _ = await send(o, "watched", "weather in Lima")
    live = [await asyncio.wait_for(call.read(), 5) for _ in second]
    assert [s.id for s in live] == [s.id for s in second]
    call.cancel()


async def test_model_failure_is_unavailable(orchestrator):
    o = orchestrator
    await create(o, "down")
    states = []
    request = svc.SendMessageRequest(conversation="down", text="boom")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await collect(o.conversations.SendMessage(request), states)
    details = decode(failed.value)
    assert details.code == "UNAVAILABLE" and "model provider is down" in details.message
    assert [s.kind for s in states] == [K.STATE_KIND_USER_MESSAGE, K.STATE_KIND_FINISHED]
    # the conversation is free again
    _, finished = await send(o, "down", "hello again")
    assert finished.text == "Echo: hello again"


async def test_a_tool_that_never_answers_times_out(orchestrator):
    o = orchestrator
    await create(o, "slow")
    overrides = pb.Overrides(tools=["sleepy"])
    await o.conversations.SetOverrides(
        svc.SetOverridesRequest(conversation="slow", overrides=overrides)
    )
    states, finished = await send(o, "slow", "slow please")
    result = next(s for s in states if s.kind == K.STATE_KIND_TOOL_RESULT)
    assert result.is_error and json.loads(result.data_json)["error"] == "DEADLINE_EXCEEDED"
    assert finished.tool_calls == 1
