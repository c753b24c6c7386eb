"""Running units of work against the ledger database, with the right locking and retries.

SQLite file (`threads=True`, the default; the SQL money backend): each unit of work runs whole
on a thread of its own, one hop from the event loop (sqlite_thread.py): writes one at a time
on the writer thread (`BEGIN IMMEDIATE`; SQLite has one writer anyway), reads on the reader
thread (a WAL snapshot, concurrent with the writer). Other processes are still kept out by
SQLite's lock and busy timeout.

SQLite through the async engine (`threads=False`: units of work that await the network, the
Canton backend; or `:memory:`): the kit's engine begins every transaction with `BEGIN
IMMEDIATE`, reads included, so this process queues its own units of work on an asyncio lock
instead of spinning in SQLite's busy handler.

PostgreSQL (asyncpg, `threads=True`): write units of work are committed in groups by one
task on one pooled connection (pg_writer.py); reads run concurrently on the pool. Units that
await the network (`threads=False`, Canton) run concurrently, each in its own transaction.
Either way a serialization failure, a deadlock or a unique violation from a concurrent twin
(same request_id, same new wallet — e.g. from another gateway process) rolls back and re-runs
the unit a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from p2e_kit.db import SqliteSynchronous, create_engine
from p2e_kit.errors import DependencyUnavailable
from p2e_ledger_gateway.pg_writer import PgWriter
from p2e_ledger_gateway.sqlite_thread import SqliteThread, SqliteWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

# serialization_failure, deadlock_detected, unique_violation (lost a race to a twin)
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505"})


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retry_attempts: int = 8,
        threads: bool = True,
        sqlite_synchronous: SqliteSynchronous = "normal",
    ) -> None:
        """`sqlite_synchronous`: of the SQLite threads' connections (the engine's own are
        set by `p2e_kit.db.create_engine`)."""
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.retry_attempts = max(1, retry_attempts)
        self._local_lock = asyncio.Lock()
        self._writer: SqliteWriter | None = None
        self._reader: SqliteThread | None = None
        self._pg_writer: PgWriter | None = None
        if threads and self.is_sqlite and engine.url.database not in (None, "", ":memory:"):
            url, synchronous = engine.url, sqlite_synchronous
            self._writer = SqliteWriter(url, name="ledger-db-writer", synchronous=synchronous)
            self._reader = SqliteThread(
                url, name="ledger-db-reader", immediate=False, synchronous=synchronous
            )
        elif threads and engine.dialect.driver == "asyncpg":
            self._pg_writer = PgWriter(engine)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        retry_attempts: int = 8,
        threads: bool = True,
        sqlite_synchronous: SqliteSynchronous = "normal",
    ) -> Database:
        """The database at `url`, its engine's and its threads' SQLite connections alike."""
        return cls(
            create_engine(url, sqlite_synchronous=sqlite_synchronous),
            retry_attempts=retry_attempts,
            threads=threads,
            sqlite_synchronous=sqlite_synchronous,
        )

    async def close(self) -> None:
        """Stop the SQLite threads (if any) and dispose of the engine."""
        if self._writer is not None:
            await self._writer.close()
        if self._pg_writer is not None:
            await self._pg_writer.close()
        if self._reader is not None:
            await self._reader.close()
        self._writer = self._reader = self._pg_writer = None
        await self.engine.dispose()

    @property
    def in_memory(self) -> bool:
        """A database no other process can open (SQLite `:memory:`)."""
        return self.is_sqlite and self.engine.url.database in (None, "", ":memory:")

    @property
    def endpoint(self) -> str:
        """The database URL without its password."""
        url = self.engine.url
        bare = URL.create(
            url.drivername, url.username, None, url.host, url.port, url.database, url.query
        )
        return bare.render_as_string(hide_password=False)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self.is_sqlite:
            async with self._local_lock:
                yield
        else:
            yield

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one write transaction; commit when it returns, roll back if it raises."""
        async with self._reachable():
            for attempt in range(1, self.retry_attempts + 1):
                try:
                    if self._writer is not None:
                        return await self._writer.run(work)
                    if self._pg_writer is not None:
                        return await self._pg_writer.run(work)
                    async with self._turn(), self.engine.begin() as conn:
                        return await work(conn)
                except DBAPIError as exc:
                    if attempt == self.retry_attempts or not self._retryable(exc):
                        raise
                    log.debug("retrying a write after %s (attempt %d)", _sqlstate(exc), attempt)
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one read-only transaction that sees one snapshot (rolled back after)."""
        if self._reader is not None:
            async with self._reachable():
                return await self._reader.run(work)
        async with self._reachable(), self._turn(), self.engine.connect() as conn:
            if not self.is_sqlite:  # several statements, one snapshot (e.g. supply vs minted)
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            return await work(conn)

    @contextlib.asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        """A database that cannot be reached (or stays locked) is UNAVAILABLE, not INTERNAL."""
        try:
            yield
        except (OSError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        except DBAPIError as exc:
            lost = exc.statement is None or exc.connection_invalidated
            if lost or isinstance(exc, OperationalError | InterfaceError):
                raise self._unavailable(exc) from exc
            raise

    def _unavailable(self, exc: Exception) -> DependencyUnavailable:
        log.warning("database %s unavailable: %s", self.endpoint, exc)
        return DependencyUnavailable(
            f"the ledger database at {self.endpoint} is unavailable", reason="DATABASE_UNAVAILABLE"
        )

    async def ping(self, limit_seconds: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(limit_seconds):
                await self.read(lambda conn: conn.execute(text("SELECT 1")))
        except Exception as exc:  # whatever the driver raises, the answer is "not connected"
            log.warning("database ping failed: %s", exc)
            return False
        return True

    def _retryable(self, exc: DBAPIError) -> bool:
        if self.is_sqlite:
            return "locked" in str(exc.orig) or "busy" in str(exc.orig)
        return _sqlstate(exc) in RETRYABLE_SQLSTATES


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    if orig is None:
        return None
    return getattr(orig, "sqlstate", None) or getattr(orig.__cause__, "sqlstate", None)
