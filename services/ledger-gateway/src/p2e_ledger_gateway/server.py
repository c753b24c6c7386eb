"""Start-up: open the database, build the ledger and its publisher, serve LedgerService."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from p2e_kit.appconfig import load_agents, load_app_config
from p2e_kit.db import create_engine
from p2e_kit.errors import Unimplemented
from p2e_kit.grpc_server import Registration
from p2e_kit.service import serve
from p2e_kit.settings import ServiceSettings
from p2e_ledger_gateway.api import LedgerApi
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.outbox import OutboxPublisher
from p2e_ledger_gateway.policy import load_policies
from p2e_ledger_gateway.store import create_schema
from p2engine.ledger.v1 import ledger_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "p2engine.ledger.v1.LedgerService"


@dataclass
class LedgerApp:
    """Everything a running ledger-gateway holds; `close()` releases it."""

    db: Database
    ledger: Ledger
    publisher: OutboxPublisher | None
    registrations: list[Registration]

    async def close(self) -> None:
        """Stop the publisher and close the database; safe to call twice."""
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None
        await self.db.engine.dispose()


def ledger_options(settings: ServiceSettings) -> LedgerOptions:
    """The business configuration from `config.json` (ledger section) and `agents.yml`."""
    config = load_app_config(settings.config_dir).ledger
    if config.backend != "sql":
        raise Unimplemented(
            f"ledger backend {config.backend!r} arrives with the Canton adapter; "
            "this gateway serves the 'sql' backend"
        )
    currency = Currency(asset=config.asset, scale=config.scale)
    return LedgerOptions(
        currency=currency,
        initial_balance=currency.from_decimal(
            config.initial_balance, field="ledger.initial_balance", allow_zero=True
        ),
        policies=load_policies(config.policies, currency),
        configured_agents=tuple(a.id for a in load_agents(settings.config_dir)),
    )


async def build_app(settings: Settings) -> LedgerApp:
    """Open the database (creating tables), build the ledger, start the outbox publisher."""
    options = ledger_options(settings)
    db = Database(create_engine(settings.db_url), retry_attempts=settings.db_retry_attempts)
    try:
        await create_schema(db.engine)
    except Exception:
        await db.engine.dispose()
        raise
    publisher = None
    if settings.publish_events:
        publisher = OutboxPublisher(
            db,
            settings.nats_url,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            retry_min_seconds=settings.outbox_retry_min_seconds,
            retry_max_seconds=settings.outbox_retry_max_seconds,
            retention_hours=settings.outbox_retention_hours,
        )
        publisher.start()
    ledger = Ledger(db, options, on_outbox=publisher.notify if publisher else None)
    servicer = LedgerApi(ledger)
    registrations = [
        Registration(
            ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server, servicer, SERVICE_NAME
        )
    ]
    log.info(
        "ledger on %s (%s, scale %d)", db.endpoint, options.currency.asset, options.currency.scale
    )
    return LedgerApp(db, ledger, publisher, registrations)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[LedgerApp]:
    app = await build_app(settings)
    try:
        yield app
    finally:
        await app.close()


async def start(settings: ServiceSettings) -> None:
    assert isinstance(settings, Settings)
    app = await build_app(settings)
    try:
        await serve(settings, app.registrations, on_stop=app.close)
    finally:
        await app.close()
