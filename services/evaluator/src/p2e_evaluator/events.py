"""What the evaluator publishes: EvaluationCompleted, and the evaluation as an artifact.

Both carry Nats-Msg-Id = evaluation id, so a retry is dropped by JetStream (and the
artifact-store stores one row whatever happens).
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf import json_format

from p2e_evaluator.codec import evaluation_to_proto
from p2e_evaluator.store import EvaluationRecord
from p2e_kit.bus import Bus, artifact_subject, evaluation_completed_subject
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.evaluator.v1 import events_pb2

log = logging.getLogger(__name__)

ARTIFACT_KIND = "evaluation"
PRODUCED_BY = "evaluator"


def evaluation_artifact(record: EvaluationRecord) -> artifacts_pb2.Artifact:
    evaluation = evaluation_to_proto(record)
    payload = json_format.MessageToJson(evaluation).encode()
    return artifacts_pb2.Artifact(
        id=record.id,
        kind=ARTIFACT_KIND,
        conversation_id=record.conversation_id,
        branch_id=record.branch_id,
        produced_by=PRODUCED_BY,
        parent_ids=[record.head_artifact_id] if record.head_artifact_id else [],
        causation_id=record.request_id,
        create_time=evaluation.create_time,
        content_type="application/json",
        payload=payload,
        size_bytes=len(payload),
    )


class BusPublisher:
    """Publishes with a few quick retries; returns False instead of raising."""

    def __init__(self, bus: Bus, *, attempts: int = 3, backoff_seconds: float = 0.2) -> None:
        self.bus = bus
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds

    async def publish(self, record: EvaluationRecord) -> bool:
        completed = events_pb2.EvaluationCompleted(evaluation=evaluation_to_proto(record))
        artifact = evaluation_artifact(record)
        for attempt in range(1, self.attempts + 1):
            try:
                subject = evaluation_completed_subject(record.conversation_id)
                await self.bus.publish(subject, completed, record.id)
                subject = artifact_subject(record.conversation_id, ARTIFACT_KIND)
                await self.bus.publish(subject, artifact, record.id)
                return True
            except Exception as exc:  # NATS down, timeout, no stream...
                log.warning(
                    "publishing evaluation %s failed (attempt %d/%d): %s",
                    record.id,
                    attempt,
                    self.attempts,
                    exc,
                )
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        return False
