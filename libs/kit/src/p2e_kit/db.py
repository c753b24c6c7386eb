"""SQLAlchemy engines for a service's own database (SQLite file by default, PostgreSQL in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000

# SQLite's `synchronous` in WAL mode: "normal" syncs the log at checkpoints only, so a power
# loss or an OS crash (not a process crash) may take back the last commits; "full" syncs it
# at every COMMIT (an fsync per transaction).
SqliteSynchronous = Literal["normal", "full"]


def sqlite_pragmas(synchronous: SqliteSynchronous = "normal") -> tuple[str, ...]:
    """What every connection to a service's SQLite file runs first (WAL, durability, busy
    timeout, foreign keys)."""
    return (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous.upper()}",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys=ON",
    )


def sqlite_url(path: Path) -> str:
    """The async SQLAlchemy URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url


def is_sqlite(url: str) -> bool:
    return normalize_url(url).startswith("sqlite")


def create_engine(
    url: str, *, sqlite_synchronous: SqliteSynchronous = "normal", **kwargs: Any
) -> AsyncEngine:
    """An async engine; SQLite gets `sqlite_pragmas` (WAL, `sqlite_synchronous`, a busy
    timeout, foreign keys) and `BEGIN IMMEDIATE` for write transactions started with
    `engine.begin()` (no lost updates between processes)."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    path = url.split(":///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in sqlite_pragmas(sqlite_synchronous):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
