"""Evaluate end to end in-process: a real store, an in-memory artifact source, a publisher
that can be switched off (real implementations of the ports, no mocks)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import pytest

from p2e_evaluator.evaluations import EvaluateInput, Evaluations
from p2e_evaluator.judges import JudgePolicy, builtin_registry
from p2e_evaluator.store import EvaluationRecord, EvaluationStore
from p2e_evaluator.transcript import ArtifactView
from p2e_kit.db import create_engine
from p2e_kit.errors import NotFound


class MemorySource:
    def __init__(self, conversations: dict[str, list[ArtifactView]]) -> None:
        self.conversations = conversations
        self.calls = 0

    async def conversation_artifacts(self, conversation_id: str) -> Sequence[ArtifactView]:
        self.calls += 1
        return self.conversations.get(conversation_id, [])


class SwitchPublisher:
    def __init__(self) -> None:
        self.up = True
        self.sent: list[EvaluationRecord] = []

    async def publish(self, record: EvaluationRecord) -> bool:
        if self.up:
            self.sent.append(record)
        return self.up


def view(ident: str, kind: str, seq: int, **state: object) -> ArtifactView:
    payload = json.dumps({"id": ident, "seq": seq, **state}).encode()
    parent = (f"s{seq - 1}",) if seq > 1 else ()
    return ArtifactView(ident, kind, "b1", parent, seq, seq, payload)


CONVERSATION = [
    view("s1", "user_message", 1, text="Check my balance"),
    view("s2", "tool_call", 2, target="check_balance", dataJson="{}"),
    view("s3", "tool_result", 3, target="check_balance", dataJson='{"balance": "100.00"}'),
    view("s4", "assistant_message", 4, text="Your balance is 100.00 P2E."),
]


@pytest.fixture
async def parts(
    sqlite_url: str,
) -> AsyncIterator[tuple[Evaluations, MemorySource, SwitchPublisher]]:
    store = EvaluationStore(create_engine(sqlite_url))
    await store.create_tables()
    source = MemorySource({"c1": CONVERSATION})
    publisher = SwitchPublisher()
    policy = JudgePolicy(environ={})
    try:
        yield Evaluations(builtin_registry(), store, source, publisher, policy), source, publisher
    finally:
        await store.close()


async def test_evaluate_judges_stores_and_publishes(parts) -> None:
    evaluations, _, publisher = parts
    record = await evaluations.evaluate(EvaluateInput("offline_judge", "c1"))
    assert record.score == 1.0
    assert record.branch_id == "b1"
    assert record.head_artifact_id == "s4"
    assert record.judge_model == "offline/judge"
    assert await evaluations.get(record.id) == record
    assert [r.id for r in publisher.sent] == [record.id]


async def test_request_id_replays_the_first_evaluation(parts) -> None:
    evaluations, source, publisher = parts
    first = await evaluations.evaluate(EvaluateInput("gpt4_judge", "c1", request_id="r1"))
    again = await evaluations.evaluate(EvaluateInput("gpt4_judge", "c1", request_id="r1"))
    assert again == first
    assert source.calls == 1
    assert len(publisher.sent) == 1
    other = await evaluations.evaluate(EvaluateInput("gpt4_judge", "c1", request_id="r2"))
    assert other.id != first.id


async def test_rubric_is_recorded(parts) -> None:
    evaluations, _, _ = parts
    record = await evaluations.evaluate(EvaluateInput("gpt4_judge", "c1", rubric="be strict"))
    assert record.rubric == "be strict"


async def test_failed_publish_is_retried_later(parts) -> None:
    evaluations, _, publisher = parts
    publisher.up = False
    record = await evaluations.evaluate(EvaluateInput("offline_judge", "c1"))
    assert publisher.sent == []
    publisher.up = True
    assert await evaluations.republish_pending() == 1
    assert [r.id for r in publisher.sent] == [record.id]
    assert await evaluations.republish_pending() == 0


async def test_not_found_rows(parts) -> None:
    evaluations, _, _ = parts
    with pytest.raises(NotFound) as caught:
        await evaluations.evaluate(EvaluateInput("nope", "c1"))
    assert caught.value.reason == "EVALUATOR_NOT_FOUND"
    with pytest.raises(NotFound) as caught:
        await evaluations.evaluate(EvaluateInput("offline_judge", "unknown"))
    assert caught.value.reason == "CONVERSATION_NOT_FOUND"
    with pytest.raises(NotFound):
        await evaluations.get("ev_missing")


async def test_listed_evaluators_show_the_model_that_answers(parts) -> None:
    evaluations, _, _ = parts
    infos, token = evaluations.evaluators()
    assert [(i.spec.id, i.effective_model) for i in infos] == [
        ("gpt4_judge", "offline/judge"),
        ("offline_judge", "offline/judge"),
    ]
    assert token == ""
