"""Bootstrap: database, NATS, the domain objects, the gRPC servicers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from p2e_kit.bus import Bus, connect
from p2e_kit.db import create_engine
from p2e_kit.grpc_server import Registration
from p2e_kit.service import serve
from p2e_kit.settings import Endpoints
from p2e_orchestrator.agents import AgentDirectory, ModelResolver
from p2e_orchestrator.api import AgentApi, ConversationApi
from p2e_orchestrator.config import Settings
from p2e_orchestrator.conversations import Conversations
from p2e_orchestrator.events import ArtifactPublisher
from p2e_orchestrator.feed import ChangeFeed
from p2e_orchestrator.llm.port import ModelPort
from p2e_orchestrator.storage import Store
from p2e_orchestrator.tool_catalog import GrpcToolCatalog, ToolCatalog
from p2e_orchestrator.tool_dispatch import JetStreamToolDispatcher, ToolDispatcher
from p2e_orchestrator.turn_context import TurnLimits
from p2e_orchestrator.turns import TurnEngine
from p2engine.orchestrator.v1 import orchestrator_service_pb2 as svc
from p2engine.orchestrator.v1 import orchestrator_service_pb2_grpc as svc_grpc

log = logging.getLogger(__name__)


@dataclass
class Orchestrator:
    """The built service: its registrations, and what must be started and stopped with it."""

    registrations: list[Registration]
    store: Store
    db: AsyncEngine
    turns: TurnEngine
    publisher: ArtifactPublisher
    dispatcher: ToolDispatcher
    catalog: ToolCatalog
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        """Results consumer, artifact outbox, and the turns a previous process left running."""
        if isinstance(self.dispatcher, JetStreamToolDispatcher):
            await self.dispatcher.start()
        self._tasks.append(asyncio.create_task(self.publisher.run_outbox(), name="outbox"))
        resumed = await self.turns.resume_interrupted()
        if resumed:
            log.info("resumed %d interrupted turns", resumed)

    async def close(self) -> None:
        await self.turns.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if isinstance(self.dispatcher, JetStreamToolDispatcher):
            await self.dispatcher.stop()
        if isinstance(self.catalog, GrpcToolCatalog):
            await self.catalog.close()
        await self.publisher.close()
        await self.store.close()


async def build(
    settings: Settings,
    *,
    bus: Bus,
    model: ModelPort,
    resolve_model: ModelResolver,
    endpoints: Endpoints | None = None,
    catalog: ToolCatalog | None = None,
    dispatcher: ToolDispatcher | None = None,
) -> Orchestrator:
    """Open the database and wire the service; call `start_background()` before serving."""
    db = create_engine(settings.db_url)
    store = Store(db)
    await store.create_all()
    agents = AgentDirectory.load(settings.config_dir, resolve_model)
    catalog = catalog or GrpcToolCatalog((endpoints or Endpoints()).tool_runner_addr)
    dispatcher = dispatcher or JetStreamToolDispatcher(bus)
    feed = ChangeFeed()
    publisher = ArtifactPublisher(
        bus,
        store,
        produced_by=settings.service_name,
        retry_interval=settings.outbox_interval_seconds,
    )
    limits = TurnLimits(
        max_model_calls=settings.max_model_calls,
        tool_timeout_seconds=settings.tool_timeout_seconds,
        max_delegation_depth=settings.max_delegation_depth,
        poll_seconds=settings.watch_poll_seconds,
    )
    turns = TurnEngine(
        store=store,
        agents=agents,
        catalog=catalog,
        dispatcher=dispatcher,
        model=model,
        publisher=publisher,
        feed=feed,
        limits=limits,
    )
    conversations = Conversations(
        store=store,
        agents=agents,
        catalog=catalog,
        engine=turns,
        feed=feed,
        poll_seconds=settings.watch_poll_seconds,
    )
    registrations = [
        Registration(
            svc_grpc.add_AgentServiceServicer_to_server,
            AgentApi(agents),
            svc.DESCRIPTOR.services_by_name["AgentService"].full_name,
        ),
        Registration(
            svc_grpc.add_ConversationServiceServicer_to_server,
            ConversationApi(conversations, turns),
            svc.DESCRIPTOR.services_by_name["ConversationService"].full_name,
        ),
    ]
    return Orchestrator(registrations, store, db, turns, publisher, dispatcher, catalog)


async def start(settings: Settings) -> None:
    """Serve until SIGTERM: NATS down at start is DependencyUnavailable (exit 2 in run_main)."""
    bus = await connect(settings.nats_url, f"p2e-{settings.service_name}")
    try:
        await bus.ensure_streams()
        from p2e_kit.appconfig import load_app_config
        from p2e_orchestrator.llm import build_model_port, resolve_model

        llm_config = load_app_config(settings.config_dir).llm
        app = await build(
            settings,
            bus=bus,
            model=build_model_port(llm_config),
            resolve_model=lambda configured: resolve_model(configured, llm_config, os.environ),
        )
        await app.start_background()
        await serve(settings, app.registrations, on_stop=app.close)
    finally:
        await bus.close()
