"""Many-row INSERTs as one PostgreSQL statement over column arrays (`StatementPlans.arrays`)
store exactly what SQLAlchemy's own executemany stores: values, Python-side defaults, NULLs,
bytes, booleans, and serial ids in the order the rows were given."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from p2e_kit.prepared import StatementPlans

pytestmark = pytest.mark.postgres

metadata = sa.MetaData()


def table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("frozen", sa.Boolean, nullable=False, default=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("tag", sa.String(20), nullable=False, default="none"),
        sa.Column("order", sa.Integer, nullable=False, default=0),  # a reserved word
    )


ARRAYS, ROW_BY_ROW = table("by_arrays"), table("row_by_row")
ROWS: list[dict[str, Any]] = [  # "tag" left to its default
    {
        "name": f"n{n:02d}",
        "balance": 2**40 + n,
        "blob": bytes([n, 0, 255]),
        "order": 30 - n,
        "frozen": n % 3 == 0,
        "note": "vip" if n % 3 == 0 else None,
    }
    for n in range(30)
]


async def test_array_insert_stores_what_executemany_stores(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        plans = StatementPlans(engine.dialect)
        statement = ARRAYS.insert()
        assert plans.plan(statement, ROWS) is None  # first sighting: through SQLAlchemy
        plan = plans.plan(statement, ROWS)
        assert plan is not None
        arrays = plans.arrays(statement, plan)
        assert arrays is not None and "unnest(" in arrays.sql
        assert plans.arrays(statement, plan) is arrays  # built once
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.execute(arrays.sql, *arrays.args(ROWS))
            await conn.execute(ROW_BY_ROW.insert(), ROWS)
        async with engine.connect() as conn:
            got = (await conn.execute(sa.select(ARRAYS).order_by(ARRAYS.c.id))).all()
            want = (await conn.execute(sa.select(ROW_BY_ROW).order_by(ROW_BY_ROW.c.id))).all()
        assert [tuple(r) for r in got] == [tuple(r) for r in want]
        assert [r.name for r in got] == [row["name"] for row in ROWS]  # ids in the given order
        assert got[0].frozen is True and got[0].note == "vip" and got[0].tag == "none"
        assert got[1].frozen is False and got[1].note is None and got[2].blob == bytes([2, 0, 255])
    finally:
        await engine.dispose()


async def test_only_plain_postgresql_inserts_become_array_inserts(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    sqlite = sa.create_engine("sqlite://")
    try:
        for statement, dialect, expected in (
            (ARRAYS.insert(), engine.dialect, True),
            (ARRAYS.insert(), sqlite.dialect, False),
            (ARRAYS.insert().values(tag="fixed"), engine.dialect, False),
            (ARRAYS.update().values(tag=sa.bindparam("t")), engine.dialect, False),
        ):
            plans = StatementPlans(dialect)
            params = [{"name": "a", "balance": 1, "blob": b"", "t": "y"}] * 2
            plans.plan(statement, params)
            plan = plans.plan(statement, params)
            if plan is None:  # nothing planned: nothing to turn into arrays either
                assert not expected
                continue
            assert (plans.arrays(statement, plan) is not None) is expected, statement
    finally:
        await engine.dispose()
        sqlite.dispose()
