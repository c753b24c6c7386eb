"""What the tool-runner consumes and publishes on the bus, and the ToolResult conversion.

Consumes tools.v1.ToolExecutionRequested from `p2e.tools.exec.<tool>` (stream P2E_TOOLS,
durable consumer TOOL_RUNNER_EXEC); publishes tools.v1.ToolExecutionCompleted on
`tool_completed_subject(call_id)` (stream P2E_TOOL_RESULTS) with Nats-Msg-Id = call_id.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from p2e_kit.bus import Bus, tool_completed_subject
from p2e_kit.errors import InvalidArgument
from p2e_tool_runner.executor import OK, ExecutionRequest, Outcome
from p2engine.tools.v1 import events_pb2, tools_pb2


def result_proto(outcome: Outcome) -> tools_pb2.ToolResult:
    status = (
        tools_pb2.TOOL_RESULT_STATUS_OK
        if outcome.status == OK
        else tools_pb2.TOOL_RESULT_STATUS_ERROR
    )
    return tools_pb2.ToolResult(
        call_id=outcome.call_id,
        tool_name=outcome.tool_name,
        status=status,
        result_json=outcome.result_json,
        error_message=outcome.error_message,
        error_code=outcome.error_code,
        cached=outcome.cached,
        duration_ms=outcome.duration_ms,
    )


def decode_request(data: bytes) -> ExecutionRequest:
    """The call a ToolExecutionRequested asks for; InvalidArgument for a poison message."""
    try:
        event = events_pb2.ToolExecutionRequested.FromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"undecodable ToolExecutionRequested: {exc}") from None
    if not event.call_id or not event.tool_name:
        raise InvalidArgument("ToolExecutionRequested without call_id or tool_name")
    return ExecutionRequest(
        call_id=event.call_id,
        tool_name=event.tool_name,
        arguments_json=event.arguments_json,
        agent_id=event.agent_id,
        conversation_id=event.conversation_id,
        branch_id=event.branch_id,
    )


def completed_event(
    outcome: Outcome, request: ExecutionRequest
) -> events_pb2.ToolExecutionCompleted:
    return events_pb2.ToolExecutionCompleted(
        result=result_proto(outcome),
        agent_id=request.agent_id,
        conversation_id=request.conversation_id,
    )


async def publish_completed(bus: Bus, outcome: Outcome, request: ExecutionRequest) -> None:
    await bus.publish(
        tool_completed_subject(request.call_id),
        completed_event(outcome, request),
        msg_id=request.call_id,
    )
