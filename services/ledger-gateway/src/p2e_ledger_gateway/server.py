"""Start-up: open the database, pick the money backend, build the ledger and its publisher,
serve LedgerService.

`ledger.backend` in config.json picks where balances live: "sql" (the gateway's database) or
"canton" (a Canton participant's JSON Ledger API, `ledger.json_api_url`; tokens and retries
from `P2E_CANTON_*`). Either way the gateway's database holds the transfer outcomes, the
policies' approvals, the audit chain and the outbox (see money_backend.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from p2e_kit.appconfig import LedgerConfig, load_agents, load_app_config
from p2e_kit.grpc_server import Registration
from p2e_kit.service import serve
from p2e_kit.settings import ServiceSettings
from p2e_ledger_gateway.api import LedgerApi
from p2e_ledger_gateway.canton import CantonLedgerBackend, CantonSettings
from p2e_ledger_gateway.canton_money import CantonMoney, check_currency
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.money_backend import MoneyBackend, SqlMoney
from p2e_ledger_gateway.outbox import OutboxPublisher, PublisherConfig
from p2e_ledger_gateway.policy import load_policies
from p2e_ledger_gateway.reconciliation import reconcile_every
from p2e_ledger_gateway.store import create_schema
from p2e_ledger_gateway.writer_process import WriterConfig, WriterProcess
from p2engine.ledger.v1 import ledger_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "p2engine.ledger.v1.LedgerService"


@dataclass
class LedgerApp:
    """Everything a running ledger-gateway holds; `close()` releases it."""

    db: Database
    ledger: Ledger
    publisher: OutboxPublisher | None  # on the gateway's loop, when no writer process
    registrations: list[Registration]
    writer: WriterProcess | None = None
    reconciler: asyncio.Task[None] | None = None  # Canton: reconciliation.reconcile_every
    closed: bool = False

    async def close(self) -> None:
        """Stop the transfer writer, the publisher, the backend's client and the database;
        safe to call twice."""
        if self.reconciler is not None:
            self.reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reconciler
            self.reconciler = None
        if self.writer is not None:
            await self.writer.stop()
            self.writer = None
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None
        if not self.closed:
            self.closed = True
            await self.ledger.money.aclose()
        await self.db.close()


def ledger_options(settings: ServiceSettings) -> LedgerOptions:
    """The business configuration from `config.json` (ledger section) and `agents.yml`."""
    return _options(load_app_config(settings.config_dir).ledger, settings)


def _options(config: LedgerConfig, settings: ServiceSettings) -> LedgerOptions:
    currency = Currency(asset=config.asset, scale=config.scale)
    return LedgerOptions(
        currency=currency,
        initial_balance=currency.from_decimal(
            config.initial_balance, field="ledger.initial_balance", allow_zero=True
        ),
        policies=load_policies(config.policies, currency),
        configured_agents=tuple(a.id for a in load_agents(settings.config_dir)),
    )


def money_backend(
    config: LedgerConfig,
    db: Database,
    currency: Currency,
    *,
    canton_settings: CantonSettings | None = None,
    canton_transport: httpx.AsyncBaseTransport | None = None,
) -> MoneyBackend:
    """The backend `ledger.backend` names; Canton's HTTP transport can be a test double."""
    if config.backend == "canton":
        check_currency(currency)
        canton = CantonLedgerBackend.from_config(
            config, canton_settings or CantonSettings(), transport=canton_transport
        )
        return CantonMoney(canton, currency)
    return SqlMoney(db, currency)


async def build_app(
    settings: Settings,
    *,
    canton_settings: CantonSettings | None = None,
    canton_transport: httpx.AsyncBaseTransport | None = None,
) -> LedgerApp:
    """Open the database (creating tables), build the ledger, start the outbox publisher.

    `canton_settings` / `canton_transport` (tests): how the Canton backend reaches its
    participant, instead of `P2E_CANTON_*` and the network.
    """
    config = load_app_config(settings.config_dir).ledger
    options = _options(config, settings)
    if config.backend == "canton":
        canton_settings = canton_settings or CantonSettings()
    db = Database.open(
        settings.db_url,
        retry_attempts=settings.db_retry_attempts,
        threads=config.backend == "sql",  # Canton's moves await the network mid-transaction
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    money: MoneyBackend | None = None
    try:
        money = money_backend(
            config,
            db,
            options.currency,
            canton_settings=canton_settings,
            canton_transport=canton_transport,
        )
        await create_schema(db.engine)
        writer = _start_writer(settings, config, db, options.currency)
    except Exception:
        if money is not None:
            await money.aclose()
        await db.close()
        raise
    # The outbox publisher runs beside the transfer writer, in its process, if there is one.
    publisher: OutboxPublisher | None = None
    if writer is None and settings.publish_events:
        publisher = OutboxPublisher(db, publisher_config(settings))
        publisher.start()
    if writer is not None:
        on_outbox = writer.notify_outbox if settings.publish_events else None
    else:
        on_outbox = publisher.notify if publisher else None
    ledger = Ledger(
        db,
        options,
        money=money,
        on_outbox=on_outbox,
        write_batch=writer.write if writer else None,
    )
    reconciler = None
    if canton_settings is not None and canton_settings.reconcile_seconds > 0:
        reconciler = asyncio.create_task(
            reconcile_every(ledger, canton_settings.reconcile_seconds), name="ledger-reconciler"
        )
    servicer = LedgerApi(ledger)
    registrations = [
        Registration(
            ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server, servicer, SERVICE_NAME
        )
    ]
    currency = options.currency
    log.info(
        "ledger: money on %s %s, records on %s (%s, scale %d)",
        money.name,
        money.endpoint,
        db.endpoint,
        currency.asset,
        currency.scale,
    )
    return LedgerApp(db, ledger, publisher, registrations, writer, reconciler)


def _start_writer(
    settings: Settings, config: LedgerConfig, db: Database, currency: Currency
) -> WriterProcess | None:
    """The transfer writer process, starting, if `transfer_writer` asks for one and it can
    open the database (not an in-memory one) and write the money (the SQL backend)."""
    if settings.transfer_writer != "process" or config.backend != "sql" or db.in_memory:
        return None
    writer = WriterProcess(
        WriterConfig(
            settings.db_url,
            settings.db_retry_attempts,
            currency,
            settings.log_level,
            settings.sqlite_synchronous,
            publisher_config(settings) if settings.publish_events else None,
        )
    )
    writer.start()
    return writer


def publisher_config(settings: Settings) -> PublisherConfig:
    return PublisherConfig(
        settings.nats_url,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        linger_seconds=settings.outbox_linger_seconds,
        retry_min_seconds=settings.outbox_retry_min_seconds,
        retry_max_seconds=settings.outbox_retry_max_seconds,
        retention_hours=settings.outbox_retention_hours,
    )


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    canton_settings: CantonSettings | None = None,
    canton_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[LedgerApp]:
    app = await build_app(
        settings, canton_settings=canton_settings, canton_transport=canton_transport
    )
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
