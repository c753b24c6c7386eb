"""@evaluator marks, Registry collects: no global registry."""

from __future__ import annotations

import pytest

from p2e_evaluator.registry import JudgeContext, Judgement, Registry, evaluator
from p2e_evaluator.transcript import Transcript
from p2e_kit.errors import InvalidArgument, NotFound


@evaluator(id="constant", version="2", metrics=("score",))
async def constant(transcript: Transcript, context: JudgeContext) -> Judgement:
    return Judgement(0.5, {"score": 0.5}, "always half", "offline/judge")


def test_marking_does_not_register_anywhere() -> None:
    assert Registry().specs() == []
    registry = Registry([constant])
    (spec,) = registry.specs()
    assert (spec.id, spec.version, spec.metrics) == ("constant", "2", ("score",))
    assert spec.judge is constant


def test_registry_decorator_marks_and_registers() -> None:
    registry = Registry()

    @registry.evaluator(id="mine", version="1")
    async def mine(transcript: Transcript, context: JudgeContext) -> Judgement:
        raise NotImplementedError

    assert registry.get("mine").judge is mine


def test_unmarked_and_duplicate_judges_are_rejected() -> None:
    async def bare(transcript: Transcript, context: JudgeContext) -> Judgement:
        raise NotImplementedError

    with pytest.raises(TypeError):
        Registry([bare])
    with pytest.raises(ValueError, match="twice"):
        Registry([constant, constant])
    with pytest.raises(ValueError, match="id"):
        evaluator(id="", version="1")


def test_unknown_evaluator_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        Registry([constant]).get("nope")
    assert caught.value.reason == "EVALUATOR_NOT_FOUND"
    assert "constant" in caught.value.message


def test_paging() -> None:
    registry = Registry()
    for name in ("c", "a", "b"):
        registry.evaluator(id=name, version="1")(_judge())
    first, token = registry.page(2, "")
    assert [s.id for s in first] == ["a", "b"]
    rest, token2 = registry.page(2, token)
    assert [s.id for s in rest] == ["c"]
    assert token2 == ""
    everything, none = registry.page(0, "")
    assert len(everything) == 3
    assert none == ""
    with pytest.raises(InvalidArgument):
        registry.page(2, "!!!")
    with pytest.raises(InvalidArgument):
        registry.page(-1, "")


def _judge():  # a fresh function each time (marking sets an attribute on it)
    async def judge(transcript: Transcript, context: JudgeContext) -> Judgement:
        raise NotImplementedError

    return judge
