"""EvaluatorService and RolloutService: protos in, domain call, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from p2e_evaluator.codec import evaluation_to_proto, evaluator_to_proto
from p2e_evaluator.evaluations import EvaluateInput, Evaluations
from p2e_kit.errors import Unimplemented
from p2engine.evaluator.v1 import evaluator_pb2, evaluator_service_pb2, evaluator_service_pb2_grpc

pb = evaluator_service_pb2
ROLLOUTS_MESSAGE = (
    "rollouts arrive with the rollout feature (StartRollout, GetRollout, ListRollouts, "
    "WatchRollout, RerunRollout, ListResults, CompareRuns)"
)


class EvaluatorApi(evaluator_service_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, evaluations: Evaluations) -> None:
        self.evaluations = evaluations

    async def ListEvaluators(
        self, request: pb.ListEvaluatorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEvaluatorsResponse:
        infos, token = self.evaluations.evaluators(request.page_size, request.page_token)
        return pb.ListEvaluatorsResponse(
            evaluators=[evaluator_to_proto(i) for i in infos], next_page_token=token
        )

    async def Evaluate(
        self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Evaluation:
        record = await self.evaluations.evaluate(
            EvaluateInput(
                evaluator_id=request.evaluator_id,
                conversation_id=request.conversation_id,
                branch_id=request.branch_id,
                rubric=request.rubric,
                request_id=request.request_id,
            )
        )
        return evaluation_to_proto(record)

    async def GetEvaluation(
        self, request: pb.GetEvaluationRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Evaluation:
        return evaluation_to_proto(await self.evaluations.get(request.id))


def _rollouts() -> NoReturn:
    raise Unimplemented(ROLLOUTS_MESSAGE, reason="ROLLOUTS_NOT_IMPLEMENTED")


class RolloutApi(evaluator_service_pb2_grpc.RolloutServiceServicer):
    """Every RPC is UNIMPLEMENTED until the rollout feature lands."""

    async def StartRollout(self, request: object, context: object) -> NoReturn:
        _rollouts()

    async def GetRollout(self, request: object, context: object) -> NoReturn:
        _rollouts()

    async def ListRollouts(self, request: object, context: object) -> NoReturn:
        _rollouts()

    async def WatchRollout(
        self, request: object, context: object
    ) -> AsyncIterator[evaluator_service_pb2.RolloutProgress]:
        _rollouts()
        yield evaluator_service_pb2.RolloutProgress()  # unreachable: makes this a stream

    async def RerunRollout(self, request: object, context: object) -> NoReturn:
        _rollouts()

    async def ListResults(self, request: object, context: object) -> NoReturn:
        _rollouts()

    async def CompareRuns(self, request: object, context: object) -> NoReturn:
        _rollouts()
