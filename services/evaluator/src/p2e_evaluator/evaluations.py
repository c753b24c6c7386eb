"""Evaluate: fetch a conversation's artifacts, rebuild the transcript, judge, store, announce.

Plain async Python: the artifact-store client and the bus publisher come in as ports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from p2e_evaluator.judges import JudgePolicy
from p2e_evaluator.registry import EvaluatorSpec, Registry
from p2e_evaluator.store import EvaluationRecord, EvaluationStore
from p2e_evaluator.transcript import ArtifactView, build_transcript
from p2e_kit.errors import InvalidArgument, NotFound
from p2e_kit.ids import new_id

log = logging.getLogger(__name__)


class ArtifactSource(Protocol):
    async def conversation_artifacts(self, conversation_id: str) -> Sequence[ArtifactView]: ...


class EvaluationPublisher(Protocol):
    async def publish(self, record: EvaluationRecord) -> bool: ...


@dataclass(frozen=True)
class EvaluateInput:
    evaluator_id: str
    conversation_id: str
    branch_id: str = ""
    rubric: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class EvaluatorInfo:
    spec: EvaluatorSpec
    effective_model: str


class Evaluations:
    def __init__(
        self,
        registry: Registry,
        store: EvaluationStore,
        source: ArtifactSource,
        publisher: EvaluationPublisher,
        policy: JudgePolicy,
    ) -> None:
        self.registry = registry
        self.store = store
        self.source = source
        self.publisher = publisher
        self.policy = policy

    def evaluators(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[EvaluatorInfo], str]:
        specs, token = self.registry.page(page_size, page_token)
        return [EvaluatorInfo(s, self.policy.effective_model(s)) for s in specs], token

    async def evaluate(self, request: EvaluateInput) -> EvaluationRecord:
        if request.request_id:
            first = await self.store.by_request_id(request.request_id)
            if first is not None:
                return first
        spec = self.registry.get(request.evaluator_id)
        if not request.conversation_id:
            raise InvalidArgument("conversation_id is required", field="conversation_id")
        artifacts = await self.source.conversation_artifacts(request.conversation_id)
        if not artifacts:
            raise NotFound(
                f"conversation {request.conversation_id} has no artifacts",
                reason="CONVERSATION_NOT_FOUND",
            )
        transcript = build_transcript(request.conversation_id, artifacts, request.branch_id)
        context = self.policy.context(spec, request.rubric)
        judged = await spec.judge(transcript, context)
        record = EvaluationRecord(
            id=new_id("ev"),
            evaluator_id=spec.id,
            conversation_id=request.conversation_id,
            branch_id=transcript.branch_id,
            score=judged.score,
            metrics=dict(judged.metrics),
            rationale=judged.rationale,
            judge_model=judged.model,
            rubric=context.rubric,
            create_time=datetime.now(UTC),
            request_id=request.request_id,
            head_artifact_id=transcript.head_artifact_id,
        )
        stored = await self.store.insert(record)
        if stored.id == record.id:
            await self._announce(stored)
        return stored

    async def get(self, evaluation_id: str) -> EvaluationRecord:
        found = await self.store.get(evaluation_id) if evaluation_id else None
        if found is None:
            raise NotFound(f"evaluation {evaluation_id!r} not found", reason="EVALUATION_NOT_FOUND")
        return found

    async def _announce(self, record: EvaluationRecord) -> bool:
        """Best effort: a failure leaves the row unpublished for `republish_pending`."""
        if not await self.publisher.publish(record):
            return False
        await self.store.mark_published(record.id)
        return True

    async def republish_pending(self) -> int:
        """Publish evaluations whose announcement failed earlier; returns how many went out."""
        sent = 0
        for record in await self.store.unpublished():
            if await self._announce(replace(record)):
                sent += 1
        return sent

    async def republish_forever(self, interval_seconds: float) -> None:
        while True:
            try:
                sent = await self.republish_pending()
                if sent:
                    log.info("re-published %d evaluations", sent)
            except Exception:
                log.exception("re-publishing evaluations failed")
            await asyncio.sleep(interval_seconds)
