"""SQLite units of work on a thread of their own: one hop from the event loop per transaction.

The ledger's units of work are coroutines written against `AsyncConnection`. Through the
async driver (aiosqlite) every statement is a round trip to the driver's worker thread, about
thirty per transfer. Here a whole unit runs instead on a thread that owns a plain `sqlite3`
connection: `DirectConnection` gives that connection the face of an `AsyncConnection` whose
`execute` runs at once, so the coroutine never suspends and the thread drives it to its end
in one step (`drive`). The event loop awaits the thread once per transaction.

Writes go to one writer thread (`SqliteWriter`), which takes the units queued while it was
busy as one group: one `BEGIN IMMEDIATE`, each unit inside a SAVEPOINT of its own (a unit that
raises rolls back alone and gets its error), one COMMIT for the group; each caller hears of its
outcome only after that COMMIT. Units of one group may share state until that COMMIT
(`GroupState`: e.g. the audit chain's head, read once and written once per group); a unit
that rolls back leaves it as it found it. Reads go to a reader thread (`SqliteThread`).

A unit of work that awaits anything else (a network call: the Canton backend) cannot run
here and fails loudly; those databases keep the async engine (see database.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import sqlalchemy
from sqlalchemy import URL, Connection, Executable, event
from sqlalchemy.engine import Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.db import SQLITE_BUSY_TIMEOUT_MS, SqliteSynchronous, sqlite_pragmas
from p2e_kit.prepared import Plan, StatementPlans
from p2e_ledger_gateway.wal_checkpoints import WalCheckpointer

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 64  # units of work committed together at most


BeforeCommit = Callable[[AsyncConnection, Any], Awaitable[None]]


class GroupState:
    """What the units of one group share until its COMMIT: `values` by key, and for a key
    `before_commit[key](connection, values[key])`, run once just before the COMMIT (on the
    group's connection, as the units' statements are)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.before_commit: dict[str, BeforeCommit] = {}

    def snapshot(self) -> tuple[dict[str, Any], dict[str, BeforeCommit]]:
        return dict(self.values), dict(self.before_commit)

    def restore(self, saved: tuple[dict[str, Any], dict[str, BeforeCommit]]) -> None:
        self.values, self.before_commit = dict(saved[0]), dict(saved[1])

    async def flush(self, conn: AsyncConnection) -> None:
        for key, write in self.before_commit.items():
            await write(conn, self.values[key])

    def insert_later(self, statement: Executable, rows: list[dict[str, Any]]) -> None:
        """INSERT `rows` with the group's other rows of `statement` (one executemany) just
        before the COMMIT, in the order the units added them."""
        key = f"insert:{id(statement)}"
        self.values[key] = self.values.get(key, ()) + tuple(rows)

        async def insert(conn: AsyncConnection, all_rows: tuple[dict[str, Any], ...]) -> None:
            await conn.execute(statement, list(all_rows))

        self.before_commit[key] = insert


def group_of(conn: AsyncConnection) -> GroupState | None:
    """The group state of a unit running on the writer thread; None anywhere else."""
    return getattr(conn, "group", None)


class DirectConnection:
    """The part of `AsyncConnection` the ledger uses, over a sync connection on this thread.

    A statement run again and again goes straight to sqlite3 through its plan
    (p2e_kit.prepared); anything else through SQLAlchemy."""

    def __init__(
        self, connection: Connection, plans: StatementPlans, group: GroupState | None = None
    ) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect
        self.group = group
        self._plans = plans

    async def execute(
        self, statement: Executable, parameters: Any = None, **kwargs: Any
    ) -> Result[Any]:
        plan = None if kwargs else self._plans.plan(statement, parameters)
        if plan is not None:
            return _run_plan(self.sync_connection, plan, parameters)
        result = self.sync_connection.execute(statement, parameters, **kwargs)
        # Rows are fetched now, as aiosqlite does: results may be read after the transaction.
        return result.freeze()() if result.returns_rows else result


def _run_plan(connection: Connection, plan: Plan, parameters: Any) -> Result[Any]:
    dbapi = _dbapi(connection)
    try:
        if isinstance(parameters, list):
            cursor = dbapi.executemany(plan.sql, [plan.args(p) for p in parameters])
            return plan.result(None, cursor.rowcount)
        cursor = dbapi.execute(plan.sql, plan.args(parameters))
        rows = cursor.fetchall() if plan.returns_rows else None
        return plan.result(rows, cursor.rowcount)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(plan.sql, None, exc, sqlite3.Error) from exc

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self.sync_connection, *args, **kwargs)


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, on this thread, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("a SQLite unit of work awaited something other than its connection")


class SqliteThread:
    """One connection to a SQLite file on one thread; `run` a unit of work in one transaction.

    `immediate`: writers take SQLite's write lock when they begin (`BEGIN IMMEDIATE`, as the
    kit's async engine does) and commit; readers begin a deferred transaction, which in WAL
    mode reads one snapshot concurrently with the writer, and roll back.
    """

    def __init__(
        self,
        url: URL,
        *,
        name: str,
        immediate: bool,
        synchronous: SqliteSynchronous = "normal",
    ) -> None:
        self.immediate = immediate
        self._engine = sync_engine(url, synchronous)
        self._plans = StatementPlans(self._engine.dialect)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: Connection | None = None

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        if self._connection is None or self._connection.invalidated:
            if self._connection is not None:
                self._connection.close()
            self._connection = self._engine.connect()
        connection = self._connection
        transaction = begin(connection, immediate=self.immediate)
        try:
            unit = work(cast(AsyncConnection, DirectConnection(connection, self._plans)))
            result = drive(cast(Coroutine[Any, Any, T], unit))
        except BaseException:
            transaction.rollback()
            raise
        if self.immediate:
            transaction.commit()
        else:
            transaction.rollback()
        return result

    async def close(self) -> None:
        """Close the connection on its thread, stop the thread, dispose of the engine."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)
        self._engine.dispose()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _run_group(
    connection: Connection, plans: StatementPlans, group: list[_Unit], state: GroupState
) -> None:
    """Each unit in a SAVEPOINT of its own (a lone unit: the transaction is its own); a unit's
    error is its outcome. Raises if SQLite itself ended the transaction (disk full, I/O)."""
    if len(group) == 1:
        with contextlib.suppress(Exception):
            group[0].run(connection, plans, state)
        return
    # The SAVEPOINTs go straight to sqlite3 (SQLAlchemy would compile two statements per unit).
    dbapi = _dbapi(connection)
    for unit in group:
        saved = state.snapshot()
        _driver(dbapi, "SAVEPOINT unit")
        try:
            unit.run(connection, plans, state)
        except Exception:
            state.restore(saved)
            if not dbapi.in_transaction:
                raise
            _driver(dbapi, "ROLLBACK TO unit")
        _driver(dbapi, "RELEASE unit")


def sync_engine(url: URL, synchronous: SqliteSynchronous = "normal") -> sqlalchemy.Engine:
    """A sync engine on the SQLite file of the async `url`, set up as p2e_kit.db's."""
    engine = sqlalchemy.create_engine(
        url.set(drivername="sqlite"),
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", functools.partial(_on_connect, synchronous))
    return engine


def begin(connection: Connection, *, immediate: bool) -> sqlalchemy.RootTransaction:
    """Begin a transaction: `BEGIN IMMEDIATE` (takes the write lock) or a deferred `BEGIN`.

    Sent straight to sqlite3 rather than from a "begin" event listener: any connection event
    listener makes SQLAlchemy dispatch events around every statement the engine executes.
    """
    transaction = connection.begin()
    dbapi = _dbapi(connection)
    try:
        _driver(dbapi, "BEGIN IMMEDIATE" if immediate else "BEGIN")
    except BaseException:
        transaction.rollback()
        raise
    return transaction


def _driver(dbapi: sqlite3.Connection, sql: str) -> None:
    """Run `sql` on sqlite3; its errors raised as SQLAlchemy's (Database.write retries "busy")."""
    try:
        dbapi.execute(sql)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


class QueuedUnit:
    """A unit of work queued for a writer thread, and where its outcome goes (a future of the
    caller's loop, settled from the writer's thread after the group's COMMIT)."""

    def __init__(self, work: Callable[[AsyncConnection], Awaitable[Any]]) -> None:
        self.work = work
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.future.done():  # the caller was cancelled (the unit may still have committed)
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


class _Unit(QueuedUnit):
    """A unit of the SQLite writer: driven to its end on the writer's connection."""

    def run(self, connection: Connection, plans: StatementPlans, state: GroupState) -> None:
        try:
            unit = self.work(cast(AsyncConnection, DirectConnection(connection, plans, state)))
            self.result = drive(cast(Coroutine[Any, Any, Any], unit))
        except Exception as exc:
            self.error = exc
            raise


class SqliteWriter:
    """The writer thread: units of work queued by `run`, committed in groups (group commit)."""

    def __init__(self, url: URL, *, name: str, synchronous: SqliteSynchronous = "normal") -> None:
        self._engine = sync_engine(url, synchronous)
        self._plans = StatementPlans(self._engine.dialect)
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._connection: Connection | None = None
        # The WAL is checkpointed beside this thread, not inside its commits (wal_checkpoints.py).
        self.checkpointer = WalCheckpointer(str(url.database), name=f"{name}-checkpoints")
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        unit = _Unit(work)
        self._queue.put(unit)
        return await unit.future

    async def close(self) -> None:
        """Finish the queued units, close the connection, stop the thread."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self.checkpointer.stop)
        self._engine.dispose()

    def _serve(self) -> None:
        while True:
            group: list[_Unit] = []
            item = self._queue.get()
            while item is not None:
                group.append(item)
                if len(group) == MAX_GROUP:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                self._commit(group)
                for unit in group:
                    unit.settle()
                if self._connection is not None:
                    self.checkpointer.committed(_dbapi(self._connection))
            if item is None:
                if self._connection is not None:
                    self._connection.close()
                return

    def _commit(self, group: list[_Unit]) -> None:
        """Run the group in one transaction; if the transaction fails, every unit gets that."""
        try:
            connection = self._connect()
            transaction = begin(connection, immediate=True)
            state = GroupState()
            try:
                _run_group(connection, self._plans, group, state)
                if len(group) == 1 and group[0].error is not None:
                    transaction.rollback()
                    return
                drive(state.flush(cast(AsyncConnection, DirectConnection(connection, self._plans))))
            except BaseException:
                transaction.rollback()
                raise
            transaction.commit()
        except Exception as exc:  # BEGIN, a SAVEPOINT or the COMMIT failed: nothing committed
            log.debug("a group of %d SQLite units of work failed: %s", len(group), exc)
            for unit in group:
                unit.error = unit.error or exc

    def _connect(self) -> Connection:
        if self._connection is None or self._connection.invalidated:
            if self._connection is not None:
                self._connection.close()
            self._connection = self._engine.connect()
            self.checkpointer.take_over(_dbapi(self._connection))
        return self._connection


def _dbapi(connection: Connection) -> sqlite3.Connection:
    return cast(sqlite3.Connection, connection.connection.dbapi_connection)


def _on_connect(synchronous: SqliteSynchronous, dbapi_connection: Any, _record: Any) -> None:
    # The same settings as p2e_kit.db's async engine; SQLAlchemy decides when to begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in sqlite_pragmas(synchronous):
        cursor.execute(pragma)
    cursor.close()
