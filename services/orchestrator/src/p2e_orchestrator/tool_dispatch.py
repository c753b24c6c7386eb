"""Tool dispatch port, and its JetStream implementation.

A call is published as tools.v1.ToolExecutionRequested on `p2e.tools.exec.<tool>` (work
queue P2E_TOOLS, Nats-Msg-Id = call id); its ToolExecutionCompleted comes back on
`p2e.tools.completed.<call id>`, read by one ordered, ephemeral consumer started with the
service (deliver new) that resolves the waiting future by call id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from p2e_kit.bus import TOOL_RESULTS, Bus, tool_completed_subject, tool_exec_subject

log = logging.getLogger(__name__)

TOOL_COMPLETED_FILTER = "p2e.tools.completed.>"


@dataclass(frozen=True)
class ToolInvocation:
    call_id: str
    tool_name: str
    arguments_json: str
    agent_id: str  # the runtime's identity: the call runs (and pays) as this agent
    conversation_id: str
    branch_id: str
    state_id: str


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    result_json: str = ""
    error_code: str = ""
    error_message: str = ""

    @classmethod
    def success(cls, result_json: str) -> ToolOutcome:
        return cls(True, result_json=result_json or "null")

    @classmethod
    def error(cls, code: str, message: str) -> ToolOutcome:
        return cls(False, error_code=code, error_message=message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "result_json": self.result_json,
            "error_code": self.error_code,
            "error_message": self.error_message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolOutcome:
        return cls(
            bool(data.get("ok")),
            result_json=str(data.get("result_json", "")),
            error_code=str(data.get("error_code", "")),
            error_message=str(data.get("error_message", "")),
        )

    def data_json(self) -> str:
        """What the model reads: the result, or {"error": code, "message": ...}."""
        if self.ok:
            return self.result_json
        return json.dumps({"error": self.error_code, "message": self.error_message})


class ToolDispatcher(Protocol):
    async def run(self, invocation: ToolInvocation, *, resume: bool = False) -> ToolOutcome:
        """Execute a call and return its outcome (the caller applies the timeout).

        `resume`: the call may have run before a restart; reuse its result if one exists.
        """
        ...


def outcome_from_result(result: Any) -> ToolOutcome:
    """tools.v1.ToolResult -> ToolOutcome."""
    from p2engine.tools.v1 import tools_pb2

    if result.status == tools_pb2.TOOL_RESULT_STATUS_OK:
        return ToolOutcome.success(result.result_json)
    return ToolOutcome.error(result.error_code or "TOOL_ERROR", result.error_message)


class JetStreamToolDispatcher:
    """Publishes calls on the P2E_TOOLS work queue and awaits their completions."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._waiting: dict[str, asyncio.Future[ToolOutcome]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        from nats.js.api import DeliverPolicy

        self._sub = await self._bus.js.subscribe(
            TOOL_COMPLETED_FILTER,
            stream=TOOL_RESULTS.name,
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection may already be closed
                log.debug("unsubscribe: %s", exc)
            self._sub = None
        for future in self._waiting.values():
            future.cancel()

    async def _on_message(self, msg: Any) -> None:
        from google.protobuf.message import DecodeError

        from p2engine.tools.v1 import events_pb2

        try:
            completed = events_pb2.ToolExecutionCompleted.FromString(msg.data)
        except DecodeError:
            log.warning("undecodable message on %s: ignored", msg.subject)
            return
        call_id = completed.result.call_id or msg.subject.rsplit(".", 1)[-1]
        future = self._waiting.get(call_id)
        if future is not None and not future.done():
            future.set_result(outcome_from_result(completed.result))

    async def run(self, invocation: ToolInvocation, *, resume: bool = False) -> ToolOutcome:
        import nats.errors

        future: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self._waiting[invocation.call_id] = future
        try:
            if resume and (earlier := await self._earlier_result(invocation.call_id)):
                return earlier
            try:
                await self._bus.publish(
                    tool_exec_subject(invocation.tool_name),
                    _request(invocation),
                    msg_id=invocation.call_id,
                )
            except (nats.errors.Error, TimeoutError) as exc:
                return ToolOutcome.error(
                    "UNAVAILABLE",
                    f"cannot dispatch {invocation.tool_name}: the message bus (NATS) is not "
                    f"reachable ({type(exc).__name__})",
                )
            return await future
        finally:
            self._waiting.pop(invocation.call_id, None)

    async def _earlier_result(self, call_id: str) -> ToolOutcome | None:
        """A completion already in P2E_TOOL_RESULTS (the call ran before a restart)."""
        import nats.errors
        from nats.js.errors import NotFoundError

        from p2engine.tools.v1 import events_pb2

        try:
            raw = await self._bus.js.get_last_msg(
                TOOL_RESULTS.name, tool_completed_subject(call_id)
            )
        except NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cannot look up an earlier result of %s: %r", call_id, exc)
            return None
        if not raw.data:
            return None
        return outcome_from_result(events_pb2.ToolExecutionCompleted.FromString(raw.data).result)


def _request(invocation: ToolInvocation) -> Any:
    from p2engine.tools.v1 import events_pb2

    return events_pb2.ToolExecutionRequested(
        call_id=invocation.call_id,
        tool_name=invocation.tool_name,
        arguments_json=invocation.arguments_json,
        agent_id=invocation.agent_id,
        conversation_id=invocation.conversation_id,
        branch_id=invocation.branch_id,
        state_id=invocation.state_id,
    )
