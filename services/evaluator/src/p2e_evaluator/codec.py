"""Evaluation records and evaluator specs as evaluator.v1 protos."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from p2e_evaluator.evaluations import EvaluatorInfo
from p2e_evaluator.store import EvaluationRecord
from p2engine.evaluator.v1 import evaluator_pb2


def evaluation_to_proto(record: EvaluationRecord) -> evaluator_pb2.Evaluation:
    stamp = Timestamp()
    stamp.FromDatetime(record.create_time)
    return evaluator_pb2.Evaluation(
        id=record.id,
        evaluator_id=record.evaluator_id,
        conversation_id=record.conversation_id,
        branch_id=record.branch_id,
        score=record.score,
        metrics=record.metrics,
        rationale=record.rationale,
        judge_model=record.judge_model,
        create_time=stamp,
        rubric=record.rubric,
    )


def evaluator_to_proto(info: EvaluatorInfo) -> evaluator_pb2.Evaluator:
    return evaluator_pb2.Evaluator(
        id=info.spec.id,
        version=info.spec.version,
        description=info.spec.description,
        model=info.effective_model,
        metrics=list(info.spec.metrics),
    )
