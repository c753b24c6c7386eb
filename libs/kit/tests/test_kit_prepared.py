"""Statement plans (p2e_kit.prepared) run on sqlite3 give what SQLAlchemy gives."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Result

from p2e_kit.prepared import Plan, PreparedResult, StatementPlans

metadata = sa.MetaData()
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("frozen", sa.Boolean, nullable=False, default=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.String(40), nullable=True),
    sa.CheckConstraint("balance >= 0", name="balance_not_negative"),
)
INSERT = accounts.insert()
BY_ID = sa.select(accounts).where(accounts.c.id == sa.bindparam("id"))
BY_IDS = sa.select(accounts.c.id).where(accounts.c.id.in_(sa.bindparam("ids", expanding=True)))
DEBIT = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("acct"), accounts.c.balance >= sa.bindparam("amt"))
    .values(balance=accounts.c.balance - sa.bindparam("amt"))
)
ROWS = [
    {"name": "alice", "balance": 100, "blob": b"\x00a"},
    {"name": "bob", "balance": 5, "blob": b"b", "frozen": True, "note": "vip"},
    {"name": "carol", "balance": 2**40, "blob": b""},
]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'prepared.db'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        for row in ROWS:  # one by one: the rows do not all have the same keys
            connection.execute(INSERT, row)
        yield connection
    engine.dispose()


def planned(plans: StatementPlans, statement: Any, params: Any = None) -> Plan:
    assert plans.plan(statement, params) is None  # first sighting
    plan = plans.plan(statement, params)
    assert plan is not None
    return plan


def run(conn: Connection, plan: Plan, params: Any = None) -> Result[Any]:
    dbapi = cast(sqlite3.Connection, conn.connection.dbapi_connection)
    if isinstance(params, list):
        cursor = dbapi.executemany(plan.sql, [plan.args(p) for p in params])
        return plan.result(None, cursor.rowcount)
    cursor = dbapi.execute(plan.sql, plan.args(params))
    return plan.result(cursor.fetchall() if plan.returns_rows else None, cursor.rowcount)


def test_only_a_statement_seen_before_is_planned(conn: Connection) -> None:
    plans = StatementPlans(conn.dialect)
    assert plans.plan(BY_ID, {"id": 1}) is None
    plan = plans.plan(BY_ID, {"id": 1})
    assert plan is not None
    assert plans.plan(BY_ID, {"id": 2}) is plan
    for i in range(3):
        fresh = sa.select(accounts).where(accounts.c.id == sa.bindparam("id"))
        assert plans.plan(fresh, {"id": i}) is None
    assert plans.plan("SELECT 1", None) is None


def test_insert_applies_scalar_default_like_sqlalchemy(conn: Connection) -> None:
    plan = planned(
        StatementPlans(conn.dialect), INSERT, {"name": "dan", "balance": 7, "blob": b"x"}
    )
    assert run(conn, plan, {"name": "dan", "balance": 7, "blob": b"x"}).rowcount == 1
    conn.execute(INSERT, {"name": "dan", "balance": 7, "blob": b"x"})
    ours, theirs = conn.execute(sa.select(accounts).where(accounts.c.name == "dan")).all()
    assert ours[1:] == theirs[1:] == ("dan", 7, False, b"x", None)
    assert ours.id + 1 == theirs.id
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        run(conn, plan, {"name": "eve", "balance": -1, "blob": b""})


def test_insert_executemany(conn: Connection) -> None:
    rows = [{"name": f"m{i}", "balance": i, "blob": bytes([i])} for i in range(3)]
    plan = planned(StatementPlans(conn.dialect), INSERT, rows)
    assert run(conn, plan, rows).rowcount == 3
    stored = conn.execute(sa.select(accounts).where(accounts.c.name.like("m%"))).all()
    assert [tuple(r)[1:] for r in stored] == [
        (f"m{i}", i, False, bytes([i]), None) for i in range(3)
    ]


def test_callable_default_falls_back(conn: Connection) -> None:
    table = sa.Table(
        "callable_default",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer, default=lambda: 5),
    )
    plans = StatementPlans(conn.dialect)
    assert plans.plan(table.insert(), {"id": 1}) is None
    assert plans.plan(table.insert(), {"id": 1}) is None  # new object: never seen
    statement = table.insert()
    assert plans.plan(statement, {"id": 1}) is None
    assert plans.plan(statement, {"id": 1}) is None  # seen, but not planned


def test_select_matches_sqlalchemy(conn: Connection) -> None:
    statement = sa.select(accounts).where(
        accounts.c.id == sa.bindparam("id"), accounts.c.balance > 1
    )
    plan = planned(StatementPlans(conn.dialect), statement, {"id": 2})
    assert run(conn, plan, {"id": 2}).all() == conn.execute(statement, {"id": 2}).all()
    mappings = run(conn, plan, {"id": 2}).mappings().all()
    assert mappings == conn.execute(statement, {"id": 2}).mappings().all()
    assert mappings[0]["note"] == "vip"
    row = run(conn, plan, {"id": 2}).one()
    assert (row.name, row.balance, row.blob) == ("bob", 5, b"b")
    assert row.frozen is True
    assert run(conn, plan, {"id": 1}).one().frozen is False
    assert run(conn, plan, {"id": 99}).all() == []


def test_select_scalar_one(conn: Connection) -> None:
    statement = sa.select(accounts.c.balance).where(accounts.c.id == 3)
    plan = planned(StatementPlans(conn.dialect), statement)
    assert run(conn, plan).scalar_one() == 2**40 == conn.execute(statement).scalar_one()
    assert list(run(conn, plan).keys()) == list(conn.execute(statement).keys())


def test_expanding_in_plans_by_length(conn: Connection) -> None:
    plans = StatementPlans(conn.dialect)
    assert plans.plan(BY_IDS, {"ids": [0]}) is None  # first sighting
    found: list[Plan] = []
    for ids in ([2], [1, 3], [3, 1, 99]):
        plan = plans.plan(BY_IDS, {"ids": ids})
        assert plan is not None
        found.append(plan)
        assert sorted(run(conn, plan, {"ids": ids}).scalars()) == sorted(
            conn.execute(BY_IDS, {"ids": ids}).scalars()
        )
    assert len({id(p) for p in found}) == 3
    assert plans.plan(BY_IDS, {"ids": [7, 8]}) is found[1]
    # Lengths share a plan per power of two: 3 and 4 ids, the shorter list padded.
    assert plans.plan(BY_IDS, {"ids": [1, 2, 3, 4]}) is found[2]
    assert sorted(run(conn, found[2], {"ids": [1, 2, 3, 4]}).scalars()) == [1, 2, 3]
    five = plans.plan(BY_IDS, {"ids": [1, 2, 3, 4, 5]})
    assert five is not None and five is not found[2]
    assert sorted(run(conn, five, {"ids": [1, 2, 3, 4, 5]}).scalars()) == [1, 2, 3]


def test_update_returning_with_guard(conn: Connection) -> None:
    statement = DEBIT.returning(accounts.c.balance)
    plan = planned(StatementPlans(conn.dialect), statement, {"acct": 1, "amt": 30})
    assert run(conn, plan, {"acct": 1, "amt": 30}).scalar_one_or_none() == 70
    assert run(conn, plan, {"acct": 1, "amt": 71}).scalar_one_or_none() is None
    assert conn.execute(statement, {"acct": 1, "amt": 71}).scalar_one_or_none() is None
    assert conn.execute(statement, {"acct": 1, "amt": 70}).scalar_one_or_none() == 0


def test_update_rowcount(conn: Connection) -> None:
    plan = planned(StatementPlans(conn.dialect), DEBIT, {"acct": 2, "amt": 5})
    assert run(conn, plan, {"acct": 2, "amt": 5}).rowcount == 1
    assert run(conn, plan, {"acct": 2, "amt": 1}).rowcount == 0
    assert conn.execute(sa.select(accounts.c.balance).where(accounts.c.id == 2)).scalar() == 0


def test_missing_required_parameter(conn: Connection) -> None:
    plan = planned(StatementPlans(conn.dialect), DEBIT, {"acct": 1, "amt": 5})
    with pytest.raises(KeyError, match="amt"):
        plan.args({"acct": 1})


def test_arguments_by_key_then_with_a_key_left_to_its_default(conn: Connection) -> None:
    """`args` takes every value in one call while each parameter set has every key, and one
    by one (defaults filled in) from the first that lacks one: the same tuples either way."""
    lacking = {"name": "eve", "balance": 1, "blob": b"e"}  # frozen left to its default
    plan = planned(StatementPlans(conn.dialect), INSERT, lacking)
    full = {"name": "dan", "balance": 7, "blob": b"d", "frozen": True}
    taken = plan.args(full)  # every key there: taken in one call
    assert plan.args(dict(reversed(full.items()))) == taken  # by key, not by order
    assert taken == plan._args_one_by_one(full)
    assert plan.args(lacking) == plan._args_one_by_one(lacking)  # from now on one by one
    assert plan.args(full) == taken
    run(conn, plan, [full, lacking])
    found = conn.execute(
        sa.select(accounts.c.name, accounts.c.frozen).where(accounts.c.id > len(ROWS))
    ).all()
    assert found == [("dan", True), ("eve", False)]
    debit = planned(StatementPlans(conn.dialect), DEBIT, {"acct": 1, "amt": 5})
    assert debit.args({"acct": 1, "amt": 5}) == debit._args_one_by_one({"acct": 1, "amt": 5})
    with pytest.raises(KeyError, match="amt"):  # a required key missing after the fast path
        debit.args({"acct": 1})


def test_cache_is_bounded_lru(conn: Connection) -> None:
    plans = StatementPlans(conn.dialect, size=2)
    a, b, c = (sa.select(accounts.c.id).where(accounts.c.id == i) for i in range(3))
    plan_a, plan_b = planned(plans, a), planned(plans, b)
    assert plans.plan(a, None) is plan_a  # a is now the most recently used
    plan_c = plans.plan(c, None) or plans.plan(c, None)
    assert plan_c is not None
    assert plans.plan(a, None) is plan_a
    assert plans.plan(c, None) is plan_c
    rebuilt = plans.plan(b, None)  # evicted: planned again
    assert rebuilt is not None
    assert rebuilt is not plan_b


def test_prepared_result_rowcount() -> None:
    result = PreparedResult(("x",), [(1,), (2,)], 2)
    assert result.rowcount == 2
    assert result.scalars().all() == [1, 2]
    assert PreparedResult((), [], 0).rowcount == 0


versioned = sa.Table(
    "versioned",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(40), nullable=False, default="anon"),
    sa.Column("ver", sa.Integer, nullable=False, default=0, onupdate=7),
)


def test_update_takes_the_onupdate_value_and_a_bare_insert_its_defaults(
    conn: Connection,
) -> None:
    versioned.create(conn)
    plans = StatementPlans(conn.dialect)
    bare = versioned.insert()
    insert_plan = planned(plans, bare)
    dbapi = cast(sqlite3.Connection, conn.connection.dbapi_connection)
    dbapi.execute(insert_plan.sql, insert_plan.args(None))
    rename = versioned.update().where(versioned.c.id == 1).values(name=sa.bindparam("n"))
    plan = planned(plans, rename, {"n": "b"})
    dbapi.execute(plan.sql, plan.args({"n": "b"}))
    assert conn.execute(sa.select(versioned)).all() == [(1, "b", 7)]


def test_results_are_not_shared(conn: Connection) -> None:
    plans = StatementPlans(conn.dialect)
    plan = planned(plans, DEBIT, {"acct": 99, "amt": 1})
    first = plan.result(None, 0)
    first.close()
    assert plan.result(None, 0) is not first
    assert plan.result(None, 0).rowcount == 0
