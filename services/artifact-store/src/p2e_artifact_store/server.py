"""Start-up of the artifact-store: database, bus consumer, gRPC server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from p2e_artifact_store.api import ArtifactApi
from p2e_artifact_store.catalog import Catalog, CatalogLimits
from p2e_artifact_store.config import Settings
from p2e_artifact_store.ingest import Indexer
from p2e_artifact_store.notify import Notifier
from p2e_artifact_store.store import ArtifactStore
from p2e_kit.bus import Bus, connect
from p2e_kit.db import create_engine
from p2e_kit.grpc_server import Registration
from p2e_kit.service import serve
from p2engine.artifacts.v1 import artifacts_service_pb2, artifacts_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = artifacts_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name


@dataclass
class App:
    """Everything a running artifact-store holds."""

    store: ArtifactStore
    catalog: Catalog
    bus: Bus
    indexer: Indexer

    def registrations(self) -> list[Registration]:
        return build_registrations(self.catalog)


def build_registrations(catalog: Catalog) -> list[Registration]:
    api = ArtifactApi(catalog)
    return [
        Registration(
            artifacts_service_pb2_grpc.add_ArtifactServiceServicer_to_server, api, SERVICE_NAME
        )
    ]


async def open_store(settings: Settings) -> tuple[ArtifactStore, Catalog]:
    store = ArtifactStore(create_engine(settings.db_url))
    await store.create_tables()
    limits = CatalogLimits(
        inline_limit_bytes=settings.inline_limit_bytes,
        max_artifact_bytes=settings.max_artifact_bytes,
        watch_poll_seconds=settings.watch_poll_seconds,
    )
    return store, Catalog(store, Notifier(), limits)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[App]:
    """Open the store, connect to NATS, ensure streams and the consumer, start indexing."""
    store, catalog = await open_store(settings)
    try:
        bus = await connect(settings.nats_url, f"p2e-{settings.service_name}")
    except BaseException:
        await store.close()
        raise
    indexer = Indexer(
        bus,
        catalog,
        batch=settings.ingest_batch,
        fetch_timeout=settings.ingest_fetch_timeout_seconds,
    )
    try:
        await bus.ensure_streams()
        await indexer.start()
        yield App(store, catalog, bus, indexer)
    finally:
        await indexer.stop()
        await bus.close()
        await store.close()


async def start(settings: Settings) -> None:
    async with running(settings) as app:
        await serve(settings, app.registrations())
