"""A conversation branch as the judges see it, rebuilt from its artifacts.

The orchestrator publishes every interaction state as an artifact whose payload is the
InteractionState as JSON and whose parent_ids name the previous state. A branch is its own
states plus the prefix it forked from, so it is rebuilt by walking parents from its head.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import json_format

from p2e_kit.errors import FailedPrecondition, NotFound, PreconditionViolation
from p2engine.orchestrator.v1 import orchestrator_pb2

log = logging.getLogger(__name__)

STATE_KINDS = frozenset(
    {
        "user_message",
        "assistant_message",
        "tool_call",
        "tool_result",
        "agent_call",
        "agent_result",
        "user_input_request",
        "user_input_response",
        "waiting",
        "finished",
    }
)


@dataclass(frozen=True)
class ArtifactView:
    """What the evaluator needs of an artifact from the artifact-store."""

    id: str
    kind: str
    branch_id: str = ""
    parent_ids: tuple[str, ...] = ()
    state_seq: int = 0
    sequence: int = 0
    payload: bytes = b""


@dataclass(frozen=True)
class Turn:
    """One interaction state."""

    kind: str
    text: str = ""
    target: str = ""
    data_json: str = ""
    is_error: bool = False
    call_id: str = ""


@dataclass(frozen=True)
class Transcript:
    conversation_id: str
    branch_id: str
    turns: tuple[Turn, ...]
    head_artifact_id: str = ""


def _turn(artifact: ArtifactView) -> Turn:
    state = orchestrator_pb2.InteractionState()
    try:
        json_format.Parse(artifact.payload or b"{}", state, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        log.warning("artifact %s: payload is not an InteractionState: %s", artifact.id, exc)
    return Turn(
        kind=artifact.kind,
        text=state.text,
        target=state.target,
        data_json=state.data_json,
        is_error=state.is_error,
        call_id=state.call_id,
    )


def _select_branch(states: Sequence[ArtifactView], branch_id: str) -> list[ArtifactView]:
    """The states of a branch: its own, plus the ancestors reached through parent_ids."""
    if not branch_id:
        branch_id = max(states, key=lambda a: a.sequence).branch_id  # the latest recorded
    own = [a for a in states if a.branch_id == branch_id]
    if not own:
        raise NotFound(f"branch {branch_id} has no recorded states", reason="BRANCH_NOT_FOUND")
    by_id = {a.id: a for a in states}
    chosen = {a.id: a for a in own}
    cursor: ArtifactView | None = max(own, key=lambda a: (a.state_seq, a.sequence))
    walked: set[str] = set()
    while cursor is not None and cursor.id not in walked:
        walked.add(cursor.id)
        chosen[cursor.id] = cursor
        cursor = next((by_id[p] for p in cursor.parent_ids if p in by_id), None)
    return sorted(chosen.values(), key=lambda a: (a.state_seq, a.sequence))


def build_transcript(
    conversation_id: str, artifacts: Sequence[ArtifactView], branch_id: str = ""
) -> Transcript:
    """The branch's turns in order; FAILED_PRECONDITION when there is nothing to judge."""
    states = [a for a in artifacts if a.kind in STATE_KINDS]
    if not states:
        raise FailedPrecondition(
            f"conversation {conversation_id} has no interaction states to judge",
            violations=[
                PreconditionViolation(
                    "NO_STATES", f"conversations/{conversation_id}", "no interaction states"
                )
            ],
            reason="NOTHING_TO_JUDGE",
        )
    selected = _select_branch(states, branch_id)
    return Transcript(
        conversation_id=conversation_id,
        branch_id=selected[-1].branch_id,
        turns=tuple(_turn(a) for a in selected),
        head_artifact_id=selected[-1].id,
    )


def render(transcript: Transcript) -> str:
    """The transcript as plain text, one line per turn (what an LLM judge reads)."""
    lines = []
    for turn in transcript.turns:
        if turn.kind in ("tool_call", "agent_call"):
            lines.append(f"[{turn.kind} {turn.target}] {turn.data_json or turn.text}")
        elif turn.kind in ("tool_result", "agent_result"):
            status = "error" if turn.is_error else "ok"
            lines.append(f"[{turn.kind} {turn.target} {status}] {turn.data_json or turn.text}")
        elif turn.kind in ("waiting", "finished"):
            lines.append(f"[{turn.kind}]")
        else:
            lines.append(f"{turn.kind.replace('_message', '')}: {turn.text}")
    return "\n".join(lines)
