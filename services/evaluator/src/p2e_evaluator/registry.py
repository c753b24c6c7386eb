"""Evaluators: judge functions marked with `@evaluator(id=, version=)`, collected by a Registry.

There is no global registry: `evaluator(...)` only describes a function; a `Registry` is an
ordinary object the server builds (`Registry([offline_judge, gpt4_judge])`), and
`registry.evaluator(...)` marks and registers in one step.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2e_kit.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from p2e_evaluator.transcript import Transcript

OFFLINE_JUDGE_MODEL = "offline/judge"
SPEC_ATTRIBUTE = "__p2e_evaluator__"


@dataclass(frozen=True)
class JudgeContext:
    """How one judgement is made: the rubric and the model that actually answers."""

    rubric: str
    model: str
    offline: bool
    api_base: str | None = None


@dataclass(frozen=True)
class Judgement:
    score: float
    metrics: Mapping[str, float]
    rationale: str
    model: str


Judge = Callable[["Transcript", JudgeContext], Awaitable[Judgement]]


@dataclass(frozen=True)
class EvaluatorSpec:
    id: str
    version: str
    description: str
    model: str
    metrics: tuple[str, ...]
    rubric: str
    judge: Judge = field(compare=False, repr=False)

    @property
    def needs_provider(self) -> bool:
        return not self.model.startswith("offline/")


def evaluator(
    *,
    id: str,
    version: str,
    description: str = "",
    model: str = OFFLINE_JUDGE_MODEL,
    metrics: Iterable[str] = ("score",),
    rubric: str = "",
) -> Callable[[Judge], Judge]:
    """Describe a judge function; register it with `Registry.add` (or `registry.evaluator`)."""
    if not id or not version:
        raise ValueError("an evaluator needs an id and a version")

    def mark(judge: Judge) -> Judge:
        spec = EvaluatorSpec(id, version, description, model, tuple(metrics), rubric, judge)
        setattr(judge, SPEC_ATTRIBUTE, spec)
        return judge

    return mark


class Registry:
    """The evaluators a server offers, by id."""

    def __init__(self, judges: Iterable[Judge] = ()) -> None:
        self._specs: dict[str, EvaluatorSpec] = {}
        for judge in judges:
            self.add(judge)

    def add(self, judge: Judge) -> EvaluatorSpec:
        spec = getattr(judge, SPEC_ATTRIBUTE, None)
        if not isinstance(spec, EvaluatorSpec):
            raise TypeError(f"{judge!r} is not marked with @evaluator(id=..., version=...)")
        if spec.id in self._specs:
            raise ValueError(f"evaluator {spec.id!r} is registered twice")
        self._specs[spec.id] = spec
        return spec

    def evaluator(self, **kwargs: object) -> Callable[[Judge], Judge]:
        """`@registry.evaluator(id=..., version=...)`: mark and register."""

        def register(judge: Judge) -> Judge:
            marked = evaluator(**kwargs)(judge)  # type: ignore[arg-type]
            self.add(marked)
            return marked

        return register

    def get(self, evaluator_id: str) -> EvaluatorSpec:
        spec = self._specs.get(evaluator_id)
        if spec is None:
            known = ", ".join(sorted(self._specs)) or "none"
            raise NotFound(
                f"evaluator {evaluator_id!r} is not registered (known: {known})",
                reason="EVALUATOR_NOT_FOUND",
            )
        return spec

    def specs(self) -> list[EvaluatorSpec]:
        return [self._specs[key] for key in sorted(self._specs)]

    def page(self, page_size: int, page_token: str) -> tuple[list[EvaluatorSpec], str]:
        """A page by id; page_size 0 means all. The token is an opaque offset."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", field="page_size")
        specs = self.specs()
        start = _decode_offset(page_token) if page_token else 0
        end = len(specs) if page_size == 0 else start + page_size
        token = _encode_offset(end) if end < len(specs) else ""
        return specs[start:end], token


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_offset(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        tag, _, number = text.partition(":")
        offset = int(number)
    except ValueError as exc:
        raise InvalidArgument("bad page_token", field="page_token") from exc
    if tag != "o" or offset < 0:
        raise InvalidArgument("bad page_token", field="page_token")
    return offset
