"""Writes marked `unread_write` on the PostgreSQL writer's connection (pg_writer.GroupConnection),
against the local PostgreSQL: held back and sent with the next statement as one statement
(data-modifying CTEs), never where that would change what is read or written.

The asyncpg connection under the group's connection is real; `Counting` only counts what is
sent through it, so each test can say how many statements reached the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from p2e_kit.prepared import StatementPlans, combinable, unread_write, with_unread
from p2e_ledger_gateway.pg_writer import GroupConnection
from p2e_ledger_gateway.sqlite_thread import GroupState

metadata = sa.MetaData()
ACCOUNTS = sa.Table(
    "accounts",
    metadata,
    sa.Column("name", sa.String(20), primary_key=True),
    sa.Column("balance", sa.BigInteger, sa.CheckConstraint("balance >= 0"), nullable=False),
)
MOVES = sa.Table(
    "moves",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(20), sa.ForeignKey("accounts.name"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
)
HEAD = sa.Table(
    "head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

INSERT_MOVES = unread_write(sa.insert(MOVES))
SET_BALANCE = unread_write(
    sa.update(ACCOUNTS)
    .where(ACCOUNTS.c.name == sa.bindparam("who"))
    .values(balance=sa.bindparam("new_balance"))
)
SET_HEAD = unread_write(sa.update(HEAD).where(HEAD.c.id == 1).values(seq=sa.bindparam("seq")))
READ_HEAD = sa.select(HEAD.c.seq).where(HEAD.c.id == 1).with_for_update()
READ_MOVES = sa.select(MOVES.c.name, MOVES.c.amount).order_by(MOVES.c.id)
READ_BALANCE = sa.select(ACCOUNTS.c.balance).where(ACCOUNTS.c.name == sa.bindparam("who"))
READ_HEAD_IF_MOVED = sa.select(HEAD.c.seq).where(  # reads moves in a subquery
    HEAD.c.id == 1, sa.exists().where(MOVES.c.name == sa.bindparam("who"))
)

pytestmark = pytest.mark.postgres


class Counting:
    """The real asyncpg connection, counting the statements sent through it."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.sent: list[str] = []

    async def execute(self, sql: str, *args: Any) -> Any:
        self.sent.append(sql)
        return await self.driver.execute(sql, *args)

    async def executemany(self, sql: str, args: Any) -> Any:
        self.sent.append(sql)
        return await self.driver.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.sent.append(sql)
        return await self.driver.fetch(sql, *args)


@pytest.fixture
async def group(postgres_url: str) -> AsyncIterator[tuple[GroupConnection, Counting]]:
    """A group's connection inside an open transaction, its statements planned already (a
    statement is planned from its second sighting on), the tables holding a and b (10 each)."""
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(sa.insert(ACCOUNTS), [{"name": "a", "balance": 10}])
            await conn.execute(sa.insert(ACCOUNTS), [{"name": "b", "balance": 10}])
            await conn.execute(sa.insert(HEAD).values(id=1, seq=0))
        plans = StatementPlans(engine.dialect)
        for statement, params in (
            (INSERT_MOVES, [{"name": "a", "amount": 1}, {"name": "b", "amount": 2}]),
            (SET_BALANCE, {"who": "a", "new_balance": 1}),
            (SET_HEAD, {"seq": 1}),
            (READ_HEAD, None),
            (READ_MOVES, None),
            (READ_BALANCE, {"who": "a"}),
            (READ_HEAD_IF_MOVED, {"who": "a"}),
        ):
            plans.plan(statement, params)
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await conn.begin()
            await conn.execute(sa.text("SELECT 1"))  # the transaction has begun
            counting = Counting(driver)
            yield GroupConnection(conn, counting, plans, GroupState()), counting
            await conn.rollback()
    finally:
        await engine.dispose()


async def test_held_back_writes_go_with_the_next_read_as_one_statement(
    group: tuple[GroupConnection, Counting],
) -> None:
    conn, sent = group
    moves = [{"name": "a", "amount": 3}, {"name": "b", "amount": 4}]
    assert (await conn.execute(INSERT_MOVES, moves)).rowcount == 2
    await conn.execute(SET_BALANCE, {"who": "a", "new_balance": 7})
    assert sent.sent == [] and conn.writes == 2

    assert (await conn.execute(READ_HEAD)).scalar_one() == 0  # reads neither table
    assert len(sent.sent) == 1
    assert sent.sent[0].startswith("WITH w0 AS (INSERT INTO moves")
    assert "w1 AS (UPDATE accounts" in sent.sent[0] and sent.sent[0].endswith("FOR UPDATE")

    await conn.execute(SET_HEAD, {"seq": 5})
    assert (await conn.execute(READ_HEAD)).scalar_one() == 5  # its write went first, alone
    assert len(sent.sent) == 3 and sent.sent[1].startswith("UPDATE head")
    rows = (await conn.execute(READ_MOVES)).all()
    assert [tuple(r) for r in rows] == [("a", 3), ("b", 4)]
    assert (await conn.execute(READ_BALANCE, {"who": "a"})).scalar_one() == 7


async def test_a_read_of_a_written_table_sees_the_writes(
    group: tuple[GroupConnection, Counting],
) -> None:
    conn, sent = group
    await conn.execute(INSERT_MOVES, [{"name": "b", "amount": 9}, {"name": "a", "amount": 8}])
    rows = (await conn.execute(READ_MOVES)).all()
    assert [tuple(r) for r in rows] == [("b", 9), ("a", 8)]
    assert len(sent.sent) == 2 and sent.sent[0].startswith("INSERT INTO moves")


async def test_a_read_of_a_written_table_in_a_subquery_sees_the_writes(
    group: tuple[GroupConnection, Counting],
) -> None:
    conn, sent = group
    await conn.execute(INSERT_MOVES, [{"name": "b", "amount": 9}, {"name": "a", "amount": 8}])
    assert (await conn.execute(READ_HEAD_IF_MOVED, {"who": "a"})).scalar_one() == 0
    assert len(sent.sent) == 2 and sent.sent[0].startswith("INSERT INTO moves")


async def test_two_writes_of_one_table_are_two_statements_in_order(
    group: tuple[GroupConnection, Counting],
) -> None:
    conn, sent = group
    await conn.execute(SET_BALANCE, {"who": "a", "new_balance": 3})
    await conn.execute(SET_BALANCE, {"who": "a", "new_balance": 4})  # PostgreSQL: not twice
    await conn.execute(INSERT_MOVES, [{"name": "a", "amount": 1}, {"name": "b", "amount": 1}])
    assert len(sent.sent) == 1  # the first, when the second came
    await conn.send_unread()
    assert len(sent.sent) == 2 and sent.sent[1].startswith("WITH w0 AS (UPDATE accounts")
    assert (await conn.execute(READ_BALANCE, {"who": "a"})).scalar_one() == 4
    await conn.send_unread()  # nothing held: nothing sent
    assert len(sent.sent) == 3


async def test_a_held_back_write_that_fails_fails_where_it_is_sent(
    group: tuple[GroupConnection, Counting],
) -> None:
    conn, _ = group
    ghost = [{"name": "a", "amount": 1}, {"name": "ghost", "amount": 1}]  # no such account
    await conn.execute(INSERT_MOVES, ghost)
    await conn.execute(SET_BALANCE, {"who": "a", "new_balance": 2})
    assert conn.failures == 0 and conn.writes == 2  # a unit that cannot be undone alone
    with pytest.raises(IntegrityError, match="foreign key"):
        await conn.send_unread()
    with pytest.raises(DBAPIError, match="aborted"):  # it went to the server
        await conn.execute(READ_BALANCE, {"who": "a"})
    assert conn.failures == 1  # the read


async def test_a_failing_write_held_back_before_a_read_fails_the_read(
    group: tuple[GroupConnection, Counting],
) -> None:
    conn, _ = group
    await conn.execute(SET_BALANCE, {"who": "b", "new_balance": -1})  # CHECK (balance >= 0)
    with pytest.raises(IntegrityError, match="check"):
        await conn.execute(READ_HEAD)
    assert conn.failures == 1


def test_with_unread_renumbers_each_parts_parameters() -> None:
    sql, args = with_unread(
        [("INSERT INTO t (a) VALUES ($1)", [1]), ("UPDATE u SET b = $1 WHERE c = $2", [2, 3])],
        "SELECT x FROM v WHERE y = $1 AND z = $2",
        [4, 5],
    )
    assert sql == (
        "WITH w0 AS (INSERT INTO t (a) VALUES ($1)), w1 AS (UPDATE u SET b = $2 WHERE c = $3) "
        "SELECT x FROM v WHERE y = $4 AND z = $5"
    )
    assert args == [1, 2, 3, 4, 5]


def test_only_plain_statements_are_combined() -> None:
    assert combinable("UPDATE t SET a = $1")
    assert not combinable("UPDATE t SET a = 'x$1'")  # a literal could hold "$1"
    assert not combinable("  with x AS (SELECT 1) SELECT * FROM x")
    with pytest.raises(TypeError, match="table"):
        unread_write(sa.text("UPDATE t SET a = 1"))
    marked = unread_write(sa.text("UPDATE t SET a = 1"), "t")
    assert marked.get_execution_options()["p2e_unread_write"] == "t"
