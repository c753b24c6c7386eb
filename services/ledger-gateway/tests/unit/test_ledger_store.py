"""The schema's own guarantees, independent of the code paths that respect them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from p2e_kit.db import create_engine
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.store import create_schema, transfers, wallets


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(sqlite_url))
    await create_schema(database.engine)
    await create_schema(database.engine)  # idempotent
    await database.write(
        lambda conn: conn.execute(
            insert(wallets),
            [{"agent_id": a, "balance": 100, "create_time": 1} for a in ("a", "b")],
        )
    )
    yield database
    await database.close()


def transfer(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "tr_1",
        "request_id": "r1",
        "from_agent": "a",
        "to_agent": "b",
        "amount": 5,
        "status": "SETTLED",
        "initiated_by": "agent:a",
        "create_time": 1,
    }
    return row | overrides


async def test_balance_can_never_go_negative(db: Database) -> None:
    with pytest.raises(IntegrityError):
        await db.write(lambda conn: conn.execute(text("UPDATE ledger_wallets SET balance = -1")))


@pytest.mark.parametrize(
    "bad", [{"to_agent": "a"}, {"amount": 0}, {"amount": -5}, {"to_agent": "nobody"}]
)
async def test_transfer_rows_are_checked(db: Database, bad: dict) -> None:
    with pytest.raises(IntegrityError):
        await db.write(lambda conn: conn.execute(insert(transfers), transfer(**bad)))


async def test_request_id_is_unique_per_payer(db: Database) -> None:
    await db.write(lambda conn: conn.execute(insert(transfers), transfer()))
    await db.write(
        lambda conn: conn.execute(
            insert(transfers), transfer(id="tr_2", from_agent="b", to_agent="a")
        )
    )
    with pytest.raises(IntegrityError):
        await db.write(lambda conn: conn.execute(insert(transfers), transfer(id="tr_3")))


def test_endpoint_hides_the_password() -> None:
    db = Database(create_engine("postgresql://ledger:s3cret@db.internal:5432/p2e"))
    assert db.endpoint == "postgresql+asyncpg://ledger@db.internal:5432/p2e"
    assert "s3cret" not in db.endpoint


async def query_plan(db: Database, sql: str) -> str:
    rows = await db.read(lambda conn: conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    return " | ".join(str(row[-1]) for row in rows.all())


async def test_a_batch_finds_its_request_ids_through_the_unique_index(db: Database) -> None:
    """No index of its own: the (request_id, from_agent) constraint's index answers it."""
    plan = await query_plan(db, "SELECT * FROM ledger_transfers WHERE request_id IN ('r1', 'r2')")
    assert "USING INDEX sqlite_autoindex_ledger_transfers" in plan, plan
    names = await db.read(
        lambda conn: conn.execute(
            text("SELECT name FROM sqlite_master WHERE tbl_name = 'ledger_transfers'")
        )
    )
    assert "ix_ledger_transfers_request" not in {row[0] for row in names.all()}


async def test_a_database_of_the_earlier_layout_keeps_its_request_index(
    sqlite_url: str,
) -> None:
    """Made before 2026-11-27: unique (from_agent, request_id) and a request_id index of its
    own. Start-up leaves both; lookups use that index; the uniqueness still holds."""
    database = Database(create_engine(sqlite_url))
    try:
        await create_schema(database.engine)

        async def to_earlier_layout(conn) -> None:  # the table as that version created it
            ddl = (
                await conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'ledger_transfers'")
                )
            ).scalar_one()
            assert "UNIQUE (request_id, from_agent)" in ddl
            await conn.execute(text("DROP TABLE ledger_transfers"))
            await conn.execute(
                text(
                    ddl.replace(
                        "UNIQUE (request_id, from_agent)", "UNIQUE (from_agent, request_id)"
                    )
                )
            )
            await conn.execute(
                text("CREATE INDEX ix_ledger_transfers_request ON ledger_transfers (request_id)")
            )

        await database.write(to_earlier_layout)
        await create_schema(database.engine)
        await database.write(
            lambda conn: conn.execute(
                insert(wallets),
                [{"agent_id": a, "balance": 100, "create_time": 1} for a in ("a", "b")],
            )
        )
        plan = await query_plan(database, "SELECT * FROM ledger_transfers WHERE request_id = 'r1'")
        assert "ix_ledger_transfers_request" in plan, plan
        await database.write(lambda conn: conn.execute(insert(transfers), transfer()))
        with pytest.raises(IntegrityError):
            await database.write(lambda conn: conn.execute(insert(transfers), transfer(id="tr_2")))
    finally:
        await database.close()
