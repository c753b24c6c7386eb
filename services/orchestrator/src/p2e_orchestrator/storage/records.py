"""Plain records the storage layer returns; the domain works with these, never with rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Conversation lifecycle (lower-case names of orchestrator.v1.ConversationState).
IDLE = "idle"
RUNNING = "running"
WAITING_FOR_USER = "waiting_for_user"
CANCELLED = "cancelled"

# State kinds (lower-case names of orchestrator.v1.StateKind without the prefix).
USER_MESSAGE = "user_message"
ASSISTANT_MESSAGE = "assistant_message"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
AGENT_CALL = "agent_call"
AGENT_RESULT = "agent_result"
USER_INPUT_REQUEST = "user_input_request"
USER_INPUT_RESPONSE = "user_input_response"
WAITING = "waiting"
FINISHED = "finished"

CALL_KINDS = (TOOL_CALL, AGENT_CALL)
RESULT_KINDS = (TOOL_RESULT, AGENT_RESULT)

# Effect status.
PENDING = "pending"
COMPLETED = "completed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Conversation:
    id: str
    name: str
    agent_id: str
    active_branch_id: str
    state: str
    parent_conversation_id: str
    depth: int
    overrides: dict[str, Any]
    created: datetime
    updated: datetime


@dataclass(frozen=True)
class Branch:
    id: str
    conversation_id: str
    name: str
    parent_branch_id: str
    fork_seq: int
    head_seq: int
    created: datetime


@dataclass(frozen=True)
class NewState:
    """What a caller appends; the store assigns seq, parent and time."""

    kind: str
    text: str = ""
    call_id: str = ""
    target: str = ""
    data_json: str = ""
    is_error: bool = False
    id: str = ""


@dataclass(frozen=True)
class State:
    id: str
    conversation_id: str
    branch_id: str
    seq: int
    parent_id: str
    agent_id: str
    kind: str
    text: str
    call_id: str
    target: str
    data_json: str
    is_error: bool
    created: datetime
    published: bool = False

    def data(self) -> Any:
        """data_json parsed; {} when empty or not JSON."""
        try:
            return json.loads(self.data_json) if self.data_json else {}
        except ValueError:
            return {}


@dataclass(frozen=True)
class Effect:
    key: str
    conversation_id: str
    kind: str
    status: str
    request_json: str
    result: dict[str, Any] | None
    created: datetime
    completed: datetime | None = None


@dataclass(frozen=True)
class NewEffect:
    """An effect to record in the same transaction as its call state."""

    kind: str
    request_json: str = ""


@dataclass(frozen=True)
class RequestKey:
    """An idempotency key to record in the same transaction as what it made."""

    scope: str
    request_id: str


@dataclass
class Page:
    items: list[Any] = field(default_factory=list)
    next_token: str = ""
