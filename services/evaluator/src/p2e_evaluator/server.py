"""Start-up of the evaluator: database, bus, artifact-store client, judges, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from p2e_evaluator.api import EvaluatorApi, RolloutApi
from p2e_evaluator.artifacts_client import ArtifactStoreClient
from p2e_evaluator.config import Settings
from p2e_evaluator.evaluations import Evaluations
from p2e_evaluator.events import BusPublisher
from p2e_evaluator.judges import JudgePolicy, builtin_registry
from p2e_evaluator.registry import Registry
from p2e_evaluator.store import EvaluationStore
from p2e_kit.appconfig import load_app_config
from p2e_kit.bus import Bus, connect
from p2e_kit.db import create_engine
from p2e_kit.grpc_server import Registration
from p2e_kit.service import serve
from p2engine.evaluator.v1 import evaluator_service_pb2, evaluator_service_pb2_grpc

log = logging.getLogger(__name__)

_services = evaluator_service_pb2.DESCRIPTOR.services_by_name
EVALUATOR_SERVICE = _services["EvaluatorService"].full_name
ROLLOUT_SERVICE = _services["RolloutService"].full_name


def build_registrations(evaluations: Evaluations) -> list[Registration]:
    pb_grpc = evaluator_service_pb2_grpc
    return [
        Registration(
            pb_grpc.add_EvaluatorServiceServicer_to_server,
            EvaluatorApi(evaluations),
            EVALUATOR_SERVICE,
        ),
        Registration(pb_grpc.add_RolloutServiceServicer_to_server, RolloutApi(), ROLLOUT_SERVICE),
    ]


@dataclass
class App:
    evaluations: Evaluations
    store: EvaluationStore
    bus: Bus
    artifacts: ArtifactStoreClient

    def registrations(self) -> list[Registration]:
        return build_registrations(self.evaluations)


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    registry: Registry | None = None,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[App]:
    """Open the database, connect to NATS, wire the judges; re-publish in the background."""
    policy = JudgePolicy(
        llm=load_app_config(settings.config_dir).llm,
        judge_model=settings.judge_model,
        environ=dict(os.environ if environ is None else environ),
    )
    store = EvaluationStore(create_engine(settings.db_url))
    await store.create_tables()
    try:
        bus = await connect(settings.nats_url, f"p2e-{settings.service_name}")
    except BaseException:
        await store.close()
        raise
    client = ArtifactStoreClient(
        settings.artifacts_address(), deadline_seconds=settings.artifacts_deadline_seconds
    )
    publisher = BusPublisher(bus, attempts=settings.publish_attempts)
    evaluations = Evaluations(registry or builtin_registry(), store, client, publisher, policy)
    republisher: asyncio.Task[None] | None = None
    try:
        await bus.ensure_streams()
        republisher = asyncio.create_task(
            evaluations.republish_forever(settings.republish_interval_seconds)
        )
        yield App(evaluations, store, bus, client)
    finally:
        if republisher is not None:
            republisher.cancel()
            await asyncio.gather(republisher, return_exceptions=True)
        await client.close()
        await bus.close()
        await store.close()


async def start(settings: Settings) -> None:
    async with running(settings) as app:
        await serve(settings, app.registrations())
