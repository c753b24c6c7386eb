"""Start-up: database, NATS (streams + work-queue worker), ledger channel, gRPC ToolService."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from p2e_kit.bus import Bus, connect
from p2e_kit.channels import open_channel
from p2e_kit.db import create_engine
from p2e_kit.grpc_server import Registration
from p2e_kit.service import serve
from p2e_kit.settings import Endpoints
from p2e_tool_runner.api import ToolServicer
from p2e_tool_runner.cache import ResultCache
from p2e_tool_runner.config import Settings
from p2e_tool_runner.executor import Executor
from p2e_tool_runner.ledger_client import GrpcLedger
from p2e_tool_runner.ports import LedgerPort
from p2e_tool_runner.sdk import ToolRegistry
from p2e_tool_runner.store import ExecutionStore
from p2e_tool_runner.tools import BUILTIN_TOOL_MODULES
from p2e_tool_runner.worker import ToolWorker
from p2engine.tools.v1 import tools_service_pb2, tools_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = tools_service_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name


def build_registry(settings: Settings) -> ToolRegistry:
    """The built-in tools plus the modules named in `settings.tool_modules`."""
    extra = [importlib.import_module(name) for name in settings.tool_modules]
    return ToolRegistry.from_modules([*BUILTIN_TOOL_MODULES, *extra])


@dataclass
class Runtime:
    """Everything the tool-runner built; `close()` releases it."""

    registry: ToolRegistry
    executor: Executor
    engine: AsyncEngine
    worker: ToolWorker | None = None
    grace_seconds: float = 5.0

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop(self.grace_seconds)
            self.worker = None
        await self.engine.dispose()


async def build_runtime(
    settings: Settings, *, ledger: LedgerPort | None, bus: Bus | None = None
) -> Runtime:
    """Open the database and build registry, executor and (with a bus) the worker, unstarted."""
    engine = create_engine(settings.db_url)
    store = ExecutionStore(engine)
    await store.create_tables()
    registry = build_registry(settings)
    executor = Executor(
        registry,
        store,
        ledger=ledger,
        cache=ResultCache(settings.cache_max_entries),
        timeout_seconds=settings.tool_timeout_seconds,
    )
    worker = None
    if bus is not None and settings.worker_enabled:
        worker = ToolWorker(
            bus,
            executor,
            concurrency=settings.worker_concurrency,
            fetch_batch=settings.worker_fetch_batch,
            fetch_timeout=settings.worker_fetch_timeout_seconds,
        )
    return Runtime(registry, executor, engine, worker, settings.shutdown_grace_seconds)


def registrations(runtime: Runtime) -> Sequence[Registration]:
    servicer = ToolServicer(runtime.registry, runtime.executor)
    return [
        Registration(
            tools_service_pb2_grpc.add_ToolServiceServicer_to_server, servicer, SERVICE_NAME
        )
    ]


async def start(settings: Settings) -> None:
    """Serve the tool-runner until SIGTERM, then drain the worker and close everything."""
    bus = await connect(settings.nats_url, settings.service_name)
    ledger_addr = settings.ledger_addr or Endpoints().ledger_addr
    channel = open_channel(ledger_addr, max_message_bytes=settings.grpc_max_message_bytes)
    runtime: Runtime | None = None
    closed = False

    async def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        if runtime is not None:
            await runtime.close()
        await channel.close()
        await bus.close()

    try:
        await bus.ensure_streams()
        ledger = GrpcLedger(
            channel, address=ledger_addr, deadline_seconds=settings.ledger_deadline_seconds
        )
        runtime = await build_runtime(settings, ledger=ledger, bus=bus)
        if runtime.worker is not None:
            await runtime.worker.start()
        log.info("%d tools; ledger at %s", len(runtime.registry), ledger_addr)
        await serve(settings, registrations(runtime), on_stop=close)
    finally:
        await close()
