"""PostgreSQL units of work committed in groups on one connection (group commit).

Run concurrently, every transfer takes the audit chain's head row `FOR UPDATE` and holds it to
its COMMIT, so transfers queue on that row and on the pool whatever the wallets; each also
pays SQLAlchemy's per-statement machinery on top of asyncpg. Here, as on SQLite's writer
thread (sqlite_thread.py), the units queued while a group was being written go together:
one transaction on one connection (a unit that raises after it wrote rolls the group back and
the others run again, see `_commit`), the audit head read by the group's first append
and written once, the group's audit entries and outbox rows inserted together, one COMMIT;
every caller hears of its outcome only after that COMMIT. Statements the units run again and
again go straight to asyncpg through their plans (p2e_kit.prepared), an INSERT of many rows
as one statement over column arrays; anything else through SQLAlchemy on the same connection
and transaction. Writes marked `unread_write` (the transfer and audit rows, the wallets'
UPDATE, the audit head's) are held back and sent with the next statement as data-modifying
CTEs of one statement (at the latest at the end of their unit, and before the COMMIT): a
batch of transfers takes 6 round trips instead of 10.

Several gateway processes on one database stay correct: each group takes its wallets' rows
and the audit head with row locks; a deadlock or serialization failure aborts one group,
whose units `Database.write` then retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Executable, Select, Table
from sqlalchemy.engine import Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import TextClause

from p2e_kit.db import create_engine
from p2e_kit.prepared import Plan, StatementPlans, combinable, unread_write_table, with_unread
from p2e_ledger_gateway.sqlite_thread import MAX_GROUP, GroupState, QueuedUnit

log = logging.getLogger(__name__)

T = TypeVar("T")


# The writer's session. Lock waits are bounded. And no statement of the writer scans a table:
# each finds its rows by key, so a scan is only ever the planner misjudging a table's size (a
# plan made while it was small, statistics never gathered: autovacuum is not always on), and
# one kept in a prepared statement's generic plan grows with the table (the batch's request-id
# lookup once took 4-5 ms). With scans ruled out the generic plans are safe to keep, and they
# spare each execution its planning: `plan_cache_mode=force_custom_plan`, planning every
# statement for its parameters, took a quarter of the writer's PostgreSQL CPU (bench/README,
# After 19), and its plans still joined the changed wallets by scanning the table. A scan that
# cannot be avoided still runs, its plan costed at 10^10: far over `jit_above_cost`, so with
# JIT on it would be compiled at every execution (~100 ms here); a writer of short keyed
# statements never gains from JIT, so it is off.
WRITER_SESSION_SETTINGS = {"lock_timeout": "10s", "enable_seqscan": "off", "jit": "off"}


class GroupConnection:
    """The part of `AsyncConnection` the ledger uses, inside a group's transaction."""

    def __init__(
        self, conn: AsyncConnection, driver: Any, plans: StatementPlans, group: GroupState
    ) -> None:
        self.async_connection = conn
        self.dialect = conn.dialect
        self.group = group
        self._driver = driver  # the asyncpg connection under `conn`
        self._plans = plans
        self.writes = 0  # statements run that may have changed something
        self.failures = 0  # statements that failed (the transaction is aborted)
        self._unread: list[tuple[str, str, Sequence[Any]]] = []  # (table, sql, args) to send

    async def execute(
        self, statement: Executable, parameters: Any = None, **kwargs: Any
    ) -> Result[Any]:
        if not getattr(statement, "is_select", False):
            self.writes += 1
        plan = None if kwargs else self._plans.plan(statement, parameters)
        try:
            if plan is None:
                await self.send_unread()
                return await self.async_connection.execute(statement, parameters, **kwargs)
            if isinstance(parameters, list) and len(parameters) > 1:
                arrays = self._plans.arrays(statement, plan)
                if arrays is None:
                    await self.send_unread()
                    return await _run_plan(self._driver, plan, parameters, self.async_connection)
                sql, args, count = arrays.sql, arrays.args(parameters), len(parameters)
            else:
                one = parameters[0] if isinstance(parameters, list) else parameters
                sql, args, count = plan.sql, plan.args(one), -1
            table = unread_write_table(statement)
            if table is not None and not plan.returns_rows and combinable(sql):
                if any(table == written for written, _, _ in self._unread):
                    await self.send_unread()  # one statement may not change a row twice
                self._unread.append((table, sql, args))
                return plan.result(None, count)
            if self._unread and plan.returns_rows and self._reads_apart(statement, sql):
                sql, args = with_unread([(q, a) for _, q, a in self._unread], sql, args)
                self._unread = []
            else:
                await self.send_unread()
            return await _run_one(self._driver, plan, sql, args, self.async_connection)
        except Exception:
            self.failures += 1
            raise

    async def send_unread(self) -> None:
        """Send the writes held back (`unread_write`) as one statement. (If it fails, the
        transaction is aborted; `writes` already counts them.)"""
        if not self._unread:
            return
        *first, (_, sql, args) = self._unread
        self._unread = []
        if first:
            sql, args = with_unread([(q, a) for _, q, a in first], sql, args)
        try:
            await self._driver.execute(sql, *args)
        except Exception as exc:
            raise _translated(self.async_connection, sql, exc) from exc

    def _reads_apart(self, statement: Executable, sql: str) -> bool:
        """Whether `statement` reads only plain tables none of the held-back writes writes
        (the parts of one statement all see the snapshot from before any of them)."""
        tables = _tables_read(statement)
        if not tables or not combinable(sql):
            return False
        return not any(table in tables for table, _, _ in self._unread)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        await self.send_unread()
        return await self.async_connection.run_sync(fn, *args, **kwargs)


@functools.lru_cache(maxsize=256)  # planned statements: module-level objects, few
def _tables_read(statement: Executable) -> frozenset[str]:
    """Every table a SELECT reads, its subqueries' too; none if it holds SQL text (which
    may read anything)."""
    if not isinstance(statement, Select):
        return frozenset()
    names: set[str] = set()
    for element in visitors.iterate(statement):
        if isinstance(element, TextClause):
            return frozenset()
        if isinstance(element, Table):
            names.add(element.name)
    return frozenset(names)


async def _run_plan(
    driver: Any, plan: Plan, parameters: list[Any], conn: AsyncConnection
) -> Result[Any]:
    """A plan over many parameter sets, one execution each (no array form)."""
    try:
        await driver.executemany(plan.sql, [plan.args(p) for p in parameters])
    except Exception as exc:
        raise _translated(conn, plan.sql, exc) from exc
    return plan.result(None, len(parameters))


async def _run_one(
    driver: Any, plan: Plan, sql: str, args: Sequence[Any], conn: AsyncConnection
) -> Result[Any]:
    """`plan`'s statement (`sql`: alone, or after held-back writes) once, with `args`."""
    try:
        if plan.returns_rows:
            rows = await driver.fetch(sql, *args)
            return plan.result(rows, len(rows))
        status = await driver.execute(sql, *args)
    except Exception as exc:
        raise _translated(conn, sql, exc) from exc
    count = status.rsplit(" ", 1)[-1]
    return plan.result(None, int(count) if count.isdigit() else -1)


def _translated(conn: AsyncConnection, sql: str, exc: Exception) -> Exception:
    """An asyncpg error as SQLAlchemy raises it (IntegrityError, OperationalError, ... with
    the driver's sqlstate), so `Database.write` retries and reports it the same way."""
    dbapi = conn.dialect.loaded_dbapi
    if isinstance(exc, dbapi.Error):
        return DBAPIError.instance(sql, None, exc, dbapi.Error)
    adapted = cast(Any, conn.sync_connection).connection.dbapi_connection
    try:
        adapted._handle_exception(exc)
    except Exception as translated:
        if isinstance(translated, dbapi.Error):
            return DBAPIError.instance(sql, None, translated, dbapi.Error)
        return translated
    return exc


class PgWriter:
    """A thread with its own event loop and engine, writing the queued units in groups.

    Its own loop, because a group's statements are sequential round trips: on the service's
    loop each would also wait for a turn behind every gRPC call and publish in flight."""

    def __init__(self, engine: AsyncEngine, *, name: str = "ledger-pg-writer") -> None:
        self._url = engine.url
        self._dialect = engine.dialect
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[QueuedUnit | None] | None = None
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        unit = QueuedUnit(work)
        queue = self._queue
        assert queue is not None
        self._loop.call_soon_threadsafe(queue.put_nowait, unit)
        return cast(T, await unit.future)

    async def close(self) -> None:
        """Finish the queued units, dispose of the engine, stop the thread."""
        if self._thread.is_alive() and self._queue is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        await asyncio.to_thread(self._thread.join)

    async def _serve(self) -> None:
        self._queue = queue = asyncio.Queue()
        # One connection: the writer runs one group at a time (one spare for a lost one).
        writer = _Writer(
            create_engine(
                self._url.render_as_string(hide_password=False),
                pool_size=1,
                max_overflow=1,
                connect_args={"server_settings": WRITER_SESSION_SETTINGS},
            )
        )
        self._ready.set()
        try:
            stop = False
            while not stop:
                group: list[QueuedUnit] = []
                item = await queue.get()
                while item is not None:
                    group.append(item)
                    if len(group) == MAX_GROUP or queue.empty():
                        break
                    item = queue.get_nowait()
                stop = item is None
                if not group:
                    continue
                try:
                    await _commit(writer, group)
                finally:
                    for unit in group:
                        unit.settle()
        finally:
            await writer.close()


class _Writer:
    """The writer's engine, plans and the one connection it keeps between groups (no pool
    checkout and ping per group); dropped after a group fails as a whole, reopened at the next."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.plans = StatementPlans(engine.dialect)
        self._conn: AsyncConnection | None = None

    async def connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = await self.engine.connect()
        return self._conn

    async def drop(self) -> None:
        """Forget the connection (it may be broken): invalidated, not returned to the pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        await self.engine.dispose()


async def _commit(writer: _Writer, group: list[QueuedUnit]) -> None:
    """Commit the group's units in one transaction, without SAVEPOINTs.

    A SAVEPOINT per unit cost a round trip and made every statement after it slower (a
    subtransaction each: ~190 -> ~260 us per round trip here). Instead a unit that raises
    before it wrote anything (a refusal found by reading: unknown wallet, request_id reused)
    simply gets its error, and the group goes on; a unit that raises after it wrote, or whose
    statement failed in the database, gets its error, the transaction is rolled back, and the
    other units run again in a new one. If the transaction itself fails (connection lost,
    deadlock with another gateway, the COMMIT), every unit still waiting gets that error.
    """
    pending, reconnected = list(group), False
    while pending:
        try:
            pending = await _attempt(writer, pending)
        except Exception as exc:
            await writer.drop()
            if not reconnected and _connection_lost(exc):
                # The kept connection died (e.g. the server restarted): once more on a new one.
                # Safe even if it died during a COMMIT that went through: the units find what
                # they wrote (request ids) and replay it.
                reconnected = True
                continue
            log.debug("a group of %d PostgreSQL units of work failed: %s", len(pending), exc)
            for unit in pending:
                unit.error = unit.error or exc
            return


async def _attempt(writer: _Writer, group: list[QueuedUnit]) -> list[QueuedUnit]:
    """One transaction over `group`: the units to run again (none when it committed)."""
    conn = await writer.connection()
    transaction = await conn.begin()
    try:
        await _begin_on_driver(conn)
        driver = (await conn.get_raw_connection()).driver_connection
        state = GroupState()
        view = GroupConnection(conn, driver, writer.plans, state)
        for n, unit in enumerate(group):
            unit.result = unit.error = None
            saved = state.snapshot()
            view.writes = view.failures = 0
            try:
                unit.result = await unit.work(cast(AsyncConnection, view))
                await view.send_unread()  # its writes fail as its own
            except Exception as exc:
                unit.error = exc
                if view.writes or view.failures:  # its changes cannot be undone alone
                    await transaction.rollback()
                    return group[:n] + group[n + 1 :]
                state.restore(saved)
        if all(unit.error is not None for unit in group):
            await transaction.rollback()
            return []
        await state.flush(cast(AsyncConnection, view))
        await view.send_unread()
    except BaseException:
        if transaction.is_active:
            await transaction.rollback()
        raise
    await transaction.commit()
    return []


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the connection is gone."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError | ConnectionError):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        name = type(seen).__name__
        if name in ("ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _begin_on_driver(conn: AsyncConnection) -> None:
    """Make SQLAlchemy's asyncpg adapter send its BEGIN now: it begins lazily, at the first
    statement it runs itself, and the statements sent straight to asyncpg must not run
    outside the transaction. Through the adapter's own method when it has it (one round
    trip: the BEGIN), else with a statement."""
    adapted = cast(Any, conn.sync_connection).connection.dbapi_connection
    start = getattr(adapted, "_start_transaction", None)
    if start is not None and getattr(adapted, "_transaction", True) is None:
        await start()
    else:
        await conn.exec_driver_sql("SELECT 1")
