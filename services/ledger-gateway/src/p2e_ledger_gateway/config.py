"""Settings of the ledger-gateway (environment `P2E_LEDGER_*`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic_settings import SettingsConfigDict

from p2e_kit.db import SqliteSynchronous
from p2e_kit.settings import DEFAULT_PORTS, ServiceSettings


class Settings(ServiceSettings):
    """Where the ledger listens, its database, and how its outbox publisher behaves.

    The business configuration (asset, scale, initial balance, policies) is not here: it is
    `config.json`'s `ledger` section under `config_dir`.
    """

    model_config = SettingsConfigDict(env_prefix="P2E_LEDGER_", extra="ignore")
    service_name: ClassVar[str] = "ledger"

    port: int = DEFAULT_PORTS["ledger"]
    # Publish the outbox to NATS JetStream; off, events wait in the outbox.
    publish_events: bool = True
    # Where batches of transfers are written: "process" (a child process with its own
    # connection, see writer_process.py) or "inline" (the gateway's own; always so for an
    # in-memory database and for the Canton backend). The outbox publisher runs where the
    # transfers are written: in that process, or on the gateway's event loop.
    transfer_writer: Literal["process", "inline"] = "process"
    # The publisher wakes at least this often even without a local commit (other processes).
    outbox_poll_seconds: float = 1.0
    # Rows published per batch.
    outbox_batch_size: int = 200
    # After a commit wakes it, the publisher waits this long for more commits to join the batch.
    outbox_linger_seconds: float = 0.02
    # Backoff between failed publish / connect attempts: doubles from min to max.
    outbox_retry_min_seconds: float = 0.2
    outbox_retry_max_seconds: float = 10.0
    # Published rows are kept this long (for inspection), then deleted.
    outbox_retention_hours: float = 24.0
    # PostgreSQL: attempts of a write transaction that hit a serialization failure or deadlock.
    db_retry_attempts: int = 8
    # SQLite's durability: "normal" (the log synced at checkpoints: a power loss or OS crash
    # may take back the last commits, a process crash never) or "full" (an fsync per commit).
    sqlite_synchronous: SqliteSynchronous = "normal"
