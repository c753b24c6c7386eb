"""Rebuilding a branch's transcript from orchestrator artifacts."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from p2e_evaluator.transcript import ArtifactView, build_transcript, render
from p2e_kit.errors import FailedPrecondition, NotFound
from p2engine.orchestrator.v1 import orchestrator_pb2

_sequence = iter(range(1, 10_000))


def state(
    branch: str,
    seq: int,
    kind: str,
    *,
    parent: str | None = None,
    text: str = "",
    target: str = "",
    data: object = None,
    is_error: bool = False,
) -> ArtifactView:
    ident = f"{branch}-{seq}"
    message = orchestrator_pb2.InteractionState(
        id=ident,
        conversation_id="c1",
        branch_id=branch,
        seq=seq,
        kind=orchestrator_pb2.StateKind.Value(f"STATE_KIND_{kind.upper()}"),
        text=text,
        target=target,
        data_json=json.dumps(data) if data is not None else "",
        is_error=is_error,
    )
    return ArtifactView(
        id=ident,
        kind=kind,
        branch_id=branch,
        parent_ids=(parent,) if parent else (),
        state_seq=seq,
        sequence=next(_sequence),
        payload=json_format.MessageToJson(message).encode(),
    )


MAIN = [
    state("main", 1, "user_message", text="hi"),
    state("main", 2, "assistant_message", parent="main-1", text="hello"),
    state("main", 3, "user_message", parent="main-2", text="weather in Paris?"),
    state("main", 4, "tool_call", parent="main-3", target="get_weather", data={"city": "Paris"}),
    state("main", 5, "tool_result", parent="main-4", target="get_weather", data={"t": 18}),
]


def test_turns_come_from_the_state_payloads() -> None:
    built = build_transcript("c1", MAIN)
    assert [t.kind for t in built.turns] == [
        "user_message",
        "assistant_message",
        "user_message",
        "tool_call",
        "tool_result",
    ]
    assert built.turns[3].target == "get_weather"
    assert json.loads(built.turns[4].data_json) == {"t": 18}
    assert built.head_artifact_id == "main-5"
    assert built.branch_id == "main"
    text = render(built)
    assert "user: weather in Paris?" in text
    assert "[tool_result get_weather ok]" in text


def test_a_fork_shares_the_prefix_and_not_the_abandoned_tail() -> None:
    fork = [
        state("alt", 3, "user_message", parent="main-2", text="balance?"),
        state("alt", 4, "assistant_message", parent="alt-3", text="100 P2E"),
    ]
    built = build_transcript("c1", MAIN + fork)  # latest recorded branch: alt
    assert [t.text for t in built.turns] == ["hi", "hello", "balance?", "100 P2E"]
    main = build_transcript("c1", MAIN + fork, branch_id="main")
    assert len(main.turns) == 5


def test_non_state_artifacts_are_ignored() -> None:
    other = ArtifactView(id="t1", kind="transfer_settled", sequence=999, payload=b"{}")
    built = build_transcript("c1", [*MAIN, other])
    assert len(built.turns) == 5


def test_nothing_to_judge_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        build_transcript("c1", [ArtifactView(id="t1", kind="transfer_settled")])
    assert caught.value.reason == "NOTHING_TO_JUDGE"


def test_unknown_branch_is_not_found() -> None:
    with pytest.raises(NotFound):
        build_transcript("c1", MAIN, branch_id="nope")


def test_a_payload_that_is_not_a_state_still_gives_a_turn() -> None:
    odd = ArtifactView(id="x", kind="user_message", branch_id="b", payload=b"not json")
    built = build_transcript("c1", [odd])
    assert built.turns[0].kind == "user_message"
    assert built.turns[0].text == ""
