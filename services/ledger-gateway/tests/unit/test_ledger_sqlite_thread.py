"""SQLite units of work on the writer thread: one group commit, each unit atomic on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.db import create_engine
from p2e_kit.errors import NotFound
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.sqlite_thread import begin
from p2e_ledger_gateway.store import create_schema, wallets


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(sqlite_url))
    await create_schema(database.engine)
    yield database
    await database.close()


def add(agent: str, balance: int = 10):
    async def work(conn: AsyncConnection) -> str:
        row = {"agent_id": agent, "balance": balance, "create_time": 1}
        await conn.execute(insert(wallets), row)
        if agent.startswith("missing"):  # a domain refusal after a statement
            raise NotFound(agent)
        return agent

    return work


async def agents(db: Database) -> list[str]:
    rows = await db.read(lambda conn: conn.execute(select(wallets.c.agent_id)))
    return sorted(rows.scalars().all())


async def test_a_failing_unit_rolls_back_alone_in_a_group(db: Database) -> None:
    units = [add("a"), add("b", -1), add("c"), add("missing1"), add("a"), add("d")]
    outcomes = await asyncio.gather(*(db.write(u) for u in units), return_exceptions=True)
    assert outcomes[0] == "a"
    assert isinstance(outcomes[1], IntegrityError)  # CHECK balance >= 0
    assert outcomes[2] == "c"
    assert isinstance(outcomes[3], NotFound)
    assert isinstance(outcomes[4], IntegrityError)  # duplicate key
    assert outcomes[5] == "d"
    assert await agents(db) == ["a", "c", "d"]


async def test_a_unit_is_atomic(db: Database) -> None:
    async def half(conn: AsyncConnection) -> None:
        await conn.execute(insert(wallets), {"agent_id": "x", "balance": 5, "create_time": 1})
        await conn.execute(update(wallets).values(balance=-5))

    with pytest.raises(IntegrityError):
        await db.write(half)
    assert await agents(db) == []


async def test_a_unit_that_awaits_the_network_cannot_run_on_the_thread(db: Database) -> None:
    async def slow(conn: AsyncConnection) -> None:
        await conn.execute(insert(wallets), {"agent_id": "y", "balance": 5, "create_time": 1})
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other"):
        await db.write(slow)
    count = await db.read(lambda c: c.execute(select(func.count()).select_from(wallets)))
    assert count.scalar_one() == 0


async def test_reads_see_committed_writes_while_the_writer_works(db: Database) -> None:
    writes = [db.write(add(f"w{n}")) for n in range(50)]
    reads = [
        db.read(lambda c: c.execute(select(func.count()).select_from(wallets))) for _ in range(20)
    ]
    results = await asyncio.gather(*writes, *reads)
    counts = [r.scalar_one() for r in results[50:]]
    assert all(0 <= c <= 50 for c in counts)
    assert len(await agents(db)) == 50


def test_a_busy_begin_raises_the_error_database_write_retries(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    event.listen(engine, "connect", lambda dbapi, _record: setattr(dbapi, "isolation_level", None))
    try:
        with engine.connect() as conn, pytest.raises(OperationalError, match="locked"):
            begin(conn, immediate=True)
    finally:
        holder.close()
        engine.dispose()


@pytest.mark.parametrize(("level", "pragma"), [("normal", 1), ("full", 2)])
async def test_sqlite_synchronous_reaches_every_connection_of_the_ledger(
    sqlite_url: str, level: str, pragma: int
) -> None:
    from sqlalchemy import text

    from p2e_ledger_gateway.money import Currency
    from p2e_ledger_gateway.writer_process import WriterConfig

    async def synchronous(conn: AsyncConnection) -> int:
        return int((await conn.execute(text("PRAGMA synchronous"))).scalar_one())

    config = WriterConfig(sqlite_url, 3, Currency(), sqlite_synchronous=level)  # type: ignore[arg-type]
    child = config.open_database()  # the transfer writer process's
    gateway = Database(
        create_engine(sqlite_url, sqlite_synchronous=level),  # type: ignore[arg-type]
        sqlite_synchronous=level,  # type: ignore[arg-type]
    )
    try:
        for db in (child, gateway):
            assert await db.write(synchronous) == pragma  # the writer thread
            assert await db.read(synchronous) == pragma  # the reader thread
            async with db.engine.connect() as conn:  # the engine (schema, Canton's writes)
                assert await synchronous(conn) == pragma
    finally:
        await child.close()
        await gateway.close()
