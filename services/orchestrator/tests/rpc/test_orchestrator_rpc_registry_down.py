"""The tool-runner's registry is down: a turn that needs tools fails UNAVAILABLE up front
and appends nothing; validating a tools override fails the same way."""

from __future__ import annotations

import grpc
import pytest

from p2e_kit.natsd import free_port
from p2e_kit.status import decode
from p2engine.orchestrator.v1 import orchestrator_pb2 as pb
from p2engine.orchestrator.v1 import orchestrator_service_pb2 as svc


@pytest.fixture
def tool_registry_addr():
    return f"127.0.0.1:{free_port()}"  # nothing listens there


async def test_send_message_is_unavailable_without_the_registry(orchestrator):
    c = orchestrator.conversations
    await c.CreateConversation(
        svc.CreateConversationRequest(agent_id="agent_alpha", name="no-tools")
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await c.SendMessage(svc.SendMessageRequest(conversation="no-tools", text="hello")).read()
    details = decode(failed.value)
    assert details.code == "UNAVAILABLE" and details.reason == "TOOL_RUNNER_UNAVAILABLE"
    assert "tool-runner" in details.message
    stack = await c.GetStack(svc.GetStackRequest(conversation="no-tools"))
    assert list(stack.states) == []
    conversation = await c.GetConversation(svc.GetConversationRequest(conversation="no-tools"))
    assert conversation.state == pb.CONVERSATION_STATE_IDLE
    # validating a tools override needs the registry too
    details = await _set_tools_error(c)
    assert details.code == "UNAVAILABLE"


async def _set_tools_error(c):
    overrides = pb.Overrides(tools=["get_weather"])
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await c.SetOverrides(svc.SetOverridesRequest(conversation="no-tools", overrides=overrides))
    return decode(failed.value)
