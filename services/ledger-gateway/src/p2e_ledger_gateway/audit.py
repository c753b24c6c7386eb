"""The append-only, hash-chained audit log.

Entry n is hashed as

    hash_n = sha256(hash_{n-1} || canonical_json(entry_n))      (hex; hash_0 = 64 zeros)

where `hash_{n-1}` is the previous hex digest as ASCII and `canonical_json` is the UTF-8 JSON
of {sequence, event_type, actor, agent_id, transfer_id, payload, create_time} with sorted
keys and no spaces (`create_time` in RFC 3339 with microseconds). Editing, deleting or
reordering any row breaks the chain at that row, which `verify` reports.

Appends run inside the caller's write transaction: SQLite's `BEGIN IMMEDIATE` serializes
them; on PostgreSQL the head row is taken `FOR UPDATE` first. On SQLite's writer thread the
units of one group commit together: the head is read by the group's first append, carried
from unit to unit (a unit that rolls back restores it), and the group's entries are inserted
and the head written once, just before the COMMIT, so the chain and its head still change in
the same transaction as what they record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.prepared import unread_write
from p2e_ledger_gateway import rfc3339 as rfc3339_text
from p2e_ledger_gateway.sqlite_thread import group_of
from p2e_ledger_gateway.store import GENESIS_HASH, audit_events, audit_head, now_us

EVENT_TYPES = frozenset(
    {
        "wallet_created",
        "wallet_frozen",
        "wallet_unfrozen",
        "transfer_settled",
        "transfer_failed",
        "transfer_pending",
        "transfer_approved",
        "transfer_rejected",
    }
)
VERIFY_BATCH = 1000


@dataclass(frozen=True)
class AuditEntry:
    sequence: int
    event_type: str
    actor: str
    agent_id: str
    transfer_id: str
    payload_json: str
    create_time: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verification:
    valid: bool
    checked: int
    first_bad_sequence: int = 0
    problem: str = ""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(data: Any) -> str:
    """Sorted keys, no spaces, non-ASCII kept (one encoder for every entry)."""
    return _CANONICAL.encode(data)


def rfc3339(micros: int) -> str:
    return rfc3339_text.micros_text(micros)


def entry_hash(prev_hash: str, row: Mapping[Any, Any]) -> str:
    """The chain hash of one entry; raises ValueError when its payload is not JSON."""
    return _hash(prev_hash, row, canonical_json(json.loads(row["payload_json"])))


def _hash(prev_hash: str, row: Mapping[Any, Any], payload: str) -> str:
    """`entry_hash` with the payload's canonical JSON at hand: the entry's canonical JSON is
    written out key by key, in sorted order, around it (what `canonical_json` of the entry
    with the decoded payload gives, without decoding and encoding the payload again)."""
    text = "".join(
        (
            '{"actor":',
            _json(row["actor"]),
            ',"agent_id":',
            _json(row["agent_id"]),
            ',"create_time":"',
            rfc3339(row["create_time"]),
            '","event_type":',
            _json(row["event_type"]),
            ',"payload":',
            payload,
            ',"sequence":',
            _json(row["sequence"]),
            ',"transfer_id":',
            _json(row["transfer_id"]),
            "}",
        )
    )
    return hashlib.sha256((prev_hash + text).encode()).hexdigest()


def _json(value: Any) -> str:
    return _string(value) if type(value) is str else canonical_json(value)


_string = json.encoder.encode_basestring  # a str as JSON, non-ASCII kept (ensure_ascii=False)


_HEAD = select(audit_head.c.sequence, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()
_HEAD_UPDATE = unread_write(
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(sequence=bindparam("seq"), hash=bindparam("last"))
)
_INSERT = unread_write(insert(audit_events))
_GROUP_KEY = "audit_head"


async def lock_head(conn: AsyncConnection) -> tuple[int, str]:
    """The chain head (sequence, hash), locked for this transaction on PostgreSQL."""
    query = _HEAD if conn.dialect.name == "sqlite" else _HEAD_LOCKED
    row = (await conn.execute(query)).one()
    return int(row.sequence), str(row.hash)


async def append(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
) -> AuditEntry:
    """Append events (dicts with event_type, actor, agent_id?, transfer_id?, payload) in order.

    Must run inside the write transaction that makes the change they record.
    Returns the last entry appended.
    """
    group = group_of(conn)
    carried = group.values.get(_GROUP_KEY) if group is not None else None
    sequence, prev = carried or await lock_head(conn)
    rows: list[dict[str, Any]] = []
    stamp = now_us()
    for event in events:
        sequence += 1
        row = {
            "sequence": sequence,
            "event_type": event["event_type"],
            "actor": event["actor"],
            "agent_id": event.get("agent_id", ""),
            "transfer_id": event.get("transfer_id", ""),
            "payload_json": canonical_json(event.get("payload", {})),
            "create_time": stamp,
            "prev_hash": prev,
        }
        row["hash"] = prev = _hash(prev, row, row["payload_json"])
        rows.append(row)
    if group is None:
        await conn.execute(_INSERT, rows)
        await conn.execute(_HEAD_UPDATE, {"seq": sequence, "last": prev})
    else:
        group.insert_later(_INSERT, rows)
        group.values[_GROUP_KEY] = (sequence, prev)
        group.before_commit[_GROUP_KEY] = _write_head
    return AuditEntry(**rows[-1])


async def _write_head(conn: AsyncConnection, head_row: tuple[int, str]) -> None:
    await conn.execute(_HEAD_UPDATE, {"seq": head_row[0], "last": head_row[1]})


async def head(conn: AsyncConnection) -> tuple[int, str]:
    row = (await conn.execute(_HEAD)).one()
    return int(row.sequence), str(row.hash)


async def verify(conn: AsyncConnection) -> Verification:
    """Recompute the chain from the first entry; report the first bad sequence."""
    expected, prev, checked = 1, GENESIS_HASH, 0
    while True:
        rows = (
            (
                await conn.execute(
                    select(audit_events)
                    .where(audit_events.c.sequence >= expected)
                    .order_by(audit_events.c.sequence)
                    .limit(VERIFY_BATCH)
                )
            )
            .mappings()
            .all()
        )
        for row in rows:
            problem = _check(row, expected, prev)
            if problem:
                return Verification(False, checked, expected, problem)
            prev, expected, checked = row["hash"], expected + 1, checked + 1
        if len(rows) < VERIFY_BATCH:
            break
    return _check_head(await head(conn), checked, prev)


def _check(row: Mapping[Any, Any], expected: int, prev: str) -> str:
    if row["sequence"] != expected:
        return f"entry {expected} is missing (next entry is {row['sequence']})"
    if row["prev_hash"] != prev:
        return f"prev_hash of entry {expected} does not match the hash of entry {expected - 1}"
    try:
        recomputed = entry_hash(prev, row)
    except ValueError:
        return f"payload of entry {expected} is not JSON"
    if recomputed != row["hash"]:
        return f"entry {expected} was altered: its content does not match its hash"
    return ""


def _check_head(head_row: tuple[int, str], checked: int, last_hash: str) -> Verification:
    head_sequence, head_hash = head_row
    if head_sequence != checked:
        return Verification(
            False,
            checked,
            checked + 1,
            f"the chain ends at entry {checked} but its head says {head_sequence}",
        )
    if head_hash != last_hash:
        return Verification(
            False, checked, max(checked, 1), "the head hash does not match the last entry's hash"
        )
    return Verification(True, checked)


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(audit_events))).scalar_one())
