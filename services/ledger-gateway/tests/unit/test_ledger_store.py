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
