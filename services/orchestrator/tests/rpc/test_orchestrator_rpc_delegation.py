"""Delegation end to end with the embedded offline model: a child conversation runs the
target agent's turn, its tools run as the target agent, and the parent relays the answer."""

from __future__ import annotations

import json
import os

import pytest

from p2e_kit.appconfig import LLMConfig
from p2e_orchestrator.llm import build_model_port
from p2engine.orchestrator.v1 import orchestrator_pb2 as pb
from p2engine.orchestrator.v1 import orchestrator_service_pb2 as svc


@pytest.fixture
def model():
    return build_model_port(LLMConfig(mode="offline"), env=os.environ)


async def test_delegate_to_agent_helper(orchestrator):
    c = orchestrator.conversations
    parent = await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_alpha", name="boss")
    )
    request = svc.SendMessageRequest(
        conversation="boss", text="Delegate to agent_helper: What's the weather in Tokyo?"
    )
    replies = [reply async for reply in c.SendMessage(request)]
    states = [reply.state for reply in replies if reply.HasField("state")]
    kinds = [s.kind for s in states]
    assert pb.STATE_KIND_AGENT_CALL in kinds and kinds[-1] == pb.STATE_KIND_FINISHED
    call = next(s for s in states if s.kind == pb.STATE_KIND_AGENT_CALL)
    result = next(s for s in states if s.kind == pb.STATE_KIND_AGENT_RESULT)
    assert call.target == "agent_helper" and result.call_id == call.id and not result.is_error
    child_id = json.loads(result.data_json)["conversation_id"]
    child = await c.GetConversation(svc.GetConversationRequest(conversation=child_id))
    assert (child.agent_id, child.parent_conversation_id, child.depth) == (
        "agent_helper",
        parent.id,
        1,
    )
    child_stack = await c.GetStack(svc.GetStackRequest(conversation=child_id))
    assert child_stack.states[0].text.strip() == "What's the weather in Tokyo?"
    tool_calls = [s for s in child_stack.states if s.kind == pb.STATE_KIND_TOOL_CALL]
    assert [s.target for s in tool_calls] == ["get_weather"]
    # the child's tool ran as the child's agent, never as the parent
    ran = {req.call_id: req for req, _ in orchestrator.worker.requests}
    assert ran[tool_calls[0].id].agent_id == "agent_helper"
    assert ran[tool_calls[0].id].conversation_id == child_id
    assert replies[-1].finished.text
