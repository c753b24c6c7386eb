"""What a turn carries: its limits, its running context, and its summary."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2e_orchestrator import rendering
from p2e_orchestrator.errors import error_for
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.tool_catalog import ToolSpec

CANCELLED_CODE = "CANCELLED"


@dataclass(frozen=True)
class TurnLimits:
    max_model_calls: int = 8
    tool_timeout_seconds: float = 30.0
    max_delegation_depth: int = 3
    poll_seconds: float = 1.0


@dataclass(frozen=True)
class TurnSummary:
    text: str
    model_calls: int
    tool_calls: int
    waiting_for_user: bool = False


@dataclass
class TurnContext:
    """Everything a running turn needs; `stack` grows as states are appended."""

    conversation: r.Conversation
    branch_id: str
    model: str = ""
    temperature: float | None = None
    system_prompt: str = ""
    offered: dict[str, ToolSpec] = field(default_factory=dict)
    stack: list[r.State] = field(default_factory=list)
    resume: bool = False

    @property
    def agent_id(self) -> str:
        return self.conversation.agent_id

    def turn(self) -> list[r.State]:
        return self.stack[rendering.turn_start(self.stack) :]


def summary_of(finished: r.State) -> TurnSummary:
    """The TurnFinished of a finished state; raises the turn's error if it failed."""
    data = finished.data() if isinstance(finished.data(), dict) else {}
    code = str(data.get("error_code", ""))
    if finished.is_error and code and code != CANCELLED_CODE:
        raise error_for(code, str(data.get("error_message") or finished.text))
    return TurnSummary(
        text=finished.text,
        model_calls=int(data.get("model_calls", 0)),
        tool_calls=int(data.get("tool_calls", 0)),
        waiting_for_user=bool(data.get("waiting_for_user", False)),
    )
