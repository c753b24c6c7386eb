"""Records <-> orchestrator.v1 protos (no logic beyond the mapping)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from p2e_orchestrator.agents import Agent
from p2e_orchestrator.storage import records as r
from p2engine.orchestrator.v1 import orchestrator_pb2 as pb


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def state_kind(kind: str) -> int:
    return pb.StateKind.Value(f"STATE_KIND_{kind.upper()}")


def conversation_state(state: str) -> int:
    return pb.ConversationState.Value(f"CONVERSATION_STATE_{state.upper()}")


def state(rec: r.State) -> pb.InteractionState:
    return pb.InteractionState(
        id=rec.id,
        conversation_id=rec.conversation_id,
        branch_id=rec.branch_id,
        seq=rec.seq,
        agent_id=rec.agent_id,
        kind=state_kind(rec.kind),  # type: ignore[arg-type]
        text=rec.text,
        call_id=rec.call_id,
        target=rec.target,
        data_json=rec.data_json,
        is_error=rec.is_error,
        create_time=timestamp(rec.created),
    )


def conversation(rec: r.Conversation) -> pb.Conversation:
    return pb.Conversation(
        id=rec.id,
        name=rec.name,
        agent_id=rec.agent_id,
        active_branch_id=rec.active_branch_id,
        state=conversation_state(rec.state),  # type: ignore[arg-type]
        parent_conversation_id=rec.parent_conversation_id,
        depth=rec.depth,
        create_time=timestamp(rec.created),
        update_time=timestamp(rec.updated),
    )


def branch(rec: r.Branch, *, active_branch_id: str) -> pb.Branch:
    return pb.Branch(
        id=rec.id,
        conversation_id=rec.conversation_id,
        name=rec.name,
        parent_branch_id=rec.parent_branch_id,
        fork_seq=rec.fork_seq,
        head_seq=rec.head_seq,
        active=rec.id == active_branch_id,
        create_time=timestamp(rec.created),
    )


def agent(rec: Agent) -> pb.Agent:
    return pb.Agent(
        id=rec.id,
        type=rec.type,
        llm_model=rec.llm_model,
        tools=list(rec.tools),
        behavior_template=rec.behavior_template,
        effective_model=rec.effective_model,
    )


def overrides(data: dict[str, Any]) -> pb.Overrides:
    out = pb.Overrides(
        behavior_template=data.get("behavior_template", ""),
        tools=list(data.get("tools", [])),
        llm_model=data.get("llm_model", ""),
    )
    if data.get("temperature") is not None:
        out.temperature = float(data["temperature"])
    return out


def overrides_dict(message: pb.Overrides) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if message.behavior_template:
        data["behavior_template"] = message.behavior_template
    if message.tools:
        data["tools"] = list(message.tools)
    if message.llm_model:
        data["llm_model"] = message.llm_model
    if message.HasField("temperature"):
        data["temperature"] = message.temperature
    return data
