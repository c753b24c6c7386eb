from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Executable, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.db import create_engine
from p2e_ledger_gateway import audit
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.store import GENESIS_HASH, audit_events, create_schema


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(sqlite_url))
    await create_schema(database.engine)
    for n in range(1, 8):
        event = {
            "event_type": "transfer_settled",
            "actor": f"agent:a{n}",
            "agent_id": f"a{n}",
            "transfer_id": f"tr_{n}",
            "payload": {"amount": f"{n}.00", "note": "ünïcode"},
        }
        await database.write(lambda conn, e=event: audit.append(conn, [e]))
    yield database
    await database.close()


async def verify(db: Database) -> audit.Verification:
    return await db.read(audit.verify)


async def test_intact_chain_is_valid(db: Database) -> None:
    result = await verify(db)
    assert (result.valid, result.checked, result.first_bad_sequence) == (True, 7, 0)


async def test_hash_formula_is_the_documented_one(db: Database) -> None:
    rows = (await db.read(lambda c: c.execute(select(audit_events).order_by("sequence")))).all()
    first = rows[0]._mapping
    entry = {
        "sequence": 1,
        "event_type": "transfer_settled",
        "actor": "agent:a1",
        "agent_id": "a1",
        "transfer_id": "tr_1",
        "payload": {"amount": "1.00", "note": "ünïcode"},
        "create_time": documented_time(first["create_time"]),
    }
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert first["prev_hash"] == GENESIS_HASH
    assert first["hash"] == hashlib.sha256((GENESIS_HASH + canonical).encode()).hexdigest()
    assert rows[1]._mapping["prev_hash"] == first["hash"]


def documented_time(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def documented_hash(prev_hash: str, row: dict[str, Any]) -> str:
    entry = {
        "sequence": row["sequence"],
        "event_type": row["event_type"],
        "actor": row["actor"],
        "agent_id": row["agent_id"],
        "transfer_id": row["transfer_id"],
        "payload": json.loads(row["payload_json"]),
        "create_time": documented_time(row["create_time"]),
    }
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.integers(1, 2**53),
    names=st.lists(st.text(), min_size=4, max_size=4),
    payload=st.dictionaries(st.text(), st.text() | st.integers() | st.none(), max_size=6),
    micros=st.integers(0, 4_102_444_800_000_000),  # up to 2100
    spaced=st.booleans(),
)
def test_entry_hash_is_the_documented_formula(
    sequence: int, names: list[str], payload: dict[str, Any], micros: int, spaced: bool
) -> None:
    """Whatever the text (quotes, control characters, non-ASCII) and however the stored
    payload is spaced, the hash is sha256(prev || json.dumps(entry, sort_keys, compact))."""
    row = {
        "sequence": sequence,
        "event_type": names[0],
        "actor": names[1],
        "agent_id": names[2],
        "transfer_id": names[3],
        "payload_json": json.dumps(payload, indent=1 if spaced else None),
        "create_time": micros,
    }
    assert audit.entry_hash(GENESIS_HASH, row) == documented_hash(GENESIS_HASH, row)
    assert audit.rfc3339(micros) == documented_time(micros)


async def test_appended_entries_hash_as_documented(db: Database) -> None:
    payload = {"q": 'a "quoted"\n\u2028 line', "z": "ünïcode ✓", "a": ""}
    event = {"event_type": "transfer_failed", "actor": 'operator:"x"', "payload": payload}
    await db.write(lambda conn: audit.append(conn, [event]))
    query = select(audit_events).order_by(audit_events.c.sequence.desc()).limit(1)
    row = dict((await db.read(lambda c: c.execute(query))).one()._mapping)
    assert row["hash"] == documented_hash(row["prev_hash"], row)
    assert json.loads(row["payload_json"]) == payload


async def tamper(db: Database, statement: Executable) -> None:
    await db.write(lambda conn: conn.execute(statement))


@pytest.mark.parametrize(
    "values",
    [
        {"payload_json": '{"amount":"999.00","note":"ünïcode"}'},
        {"actor": "operator:mallory"},
        {"create_time": 1},
        {"payload_json": "not json"},
    ],
)
async def test_edit_is_found_at_the_edited_row(db: Database, values: dict) -> None:
    await tamper(db, update(audit_events).where(audit_events.c.sequence == 4).values(**values))
    result = await verify(db)
    assert (result.valid, result.first_bad_sequence, result.checked) == (False, 4, 3)
    assert result.problem


async def test_deletion_is_found(db: Database) -> None:
    await tamper(db, delete(audit_events).where(audit_events.c.sequence == 3))
    result = await verify(db)
    assert (result.valid, result.first_bad_sequence) == (False, 3)
    assert "missing" in result.problem


async def test_deleting_the_first_row_is_found(db: Database) -> None:
    await tamper(db, delete(audit_events).where(audit_events.c.sequence == 1))
    assert (await verify(db)).first_bad_sequence == 1


async def test_truncating_the_tail_is_found(db: Database) -> None:
    await tamper(db, delete(audit_events).where(audit_events.c.sequence >= 6))
    result = await verify(db)
    assert (result.valid, result.first_bad_sequence, result.checked) == (False, 6, 5)


async def test_reordering_is_found(db: Database) -> None:
    # Swap rows 2 and 5 by swapping their sequence numbers.
    await tamper(db, text("UPDATE ledger_audit_events SET sequence = -2 WHERE sequence = 2"))
    await tamper(db, text("UPDATE ledger_audit_events SET sequence = 2 WHERE sequence = 5"))
    await tamper(db, text("UPDATE ledger_audit_events SET sequence = 5 WHERE sequence = -2"))
    result = await verify(db)
    assert (result.valid, result.first_bad_sequence) == (False, 2)


async def test_rehashed_edit_still_breaks_the_link(db: Database) -> None:
    """Recomputing the edited row's own hash is not enough: the next row no longer links."""

    async def forge(conn: AsyncConnection) -> None:
        rows = (await conn.execute(select(audit_events).order_by("sequence"))).mappings().all()
        row = dict(rows[2])
        row["actor"] = "operator:mallory"
        new_hash = audit.entry_hash(row["prev_hash"], row)
        await conn.execute(
            update(audit_events)
            .where(audit_events.c.sequence == 3)
            .values(actor="operator:mallory", hash=new_hash)
        )

    await db.write(forge)
    result = await verify(db)
    assert (result.valid, result.first_bad_sequence) == (False, 4)


async def test_append_is_a_single_chain_across_batches(db: Database) -> None:
    events = [
        {"event_type": "wallet_created", "actor": "operator:ops", "agent_id": f"w{n}"}
        for n in range(3)
    ]
    last = await db.write(lambda conn: audit.append(conn, events))
    assert last.sequence == 10
    assert await db.read(audit.head) == (10, last.hash)
    assert (await verify(db)).valid


async def test_group_commit_carries_the_head_past_units_that_roll_back(db: Database) -> None:
    async def unit(conn: AsyncConnection, n: int) -> audit.AuditEntry:
        event = {"event_type": "wallet_created", "actor": "operator:t", "payload": {"n": n}}
        entry = await audit.append(conn, [event])
        if n % 3 == 0:
            raise ValueError(f"unit {n} fails after appending")
        return entry

    outcomes = await asyncio.gather(
        *(db.write(lambda conn, n=n: unit(conn, n)) for n in range(30)), return_exceptions=True
    )
    kept = [o for o in outcomes if isinstance(o, audit.AuditEntry)]
    assert len(kept) == 20 and all(isinstance(o, ValueError) for o in outcomes if o not in kept)
    assert sorted(e.sequence for e in kept) == list(range(8, 28))
    result = await verify(db)
    assert (result.valid, result.checked) == (True, 27)
    assert await db.read(audit.head) == (27, max(kept, key=lambda e: e.sequence).hash)
