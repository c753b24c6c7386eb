"""The ledger's tables (SQLAlchemy 2 Core) and start-up schema creation.

Money columns hold integer minor units; times are integer microseconds since the epoch
(UTC), so the audit chain hashes exactly what is stored.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

ID = String(128)
GENESIS_HASH = "0" * 64

metadata = MetaData()

# With `ledger.backend: canton` a row is the gateway's registry entry of a Canton wallet (the
# foreign-key target of transfers and mints, the lock of its transfers); the money columns
# stay at their defaults there, balances and freezes are on Canton (canton_money.py).
wallets = Table(
    "ledger_wallets",
    metadata,
    Column("agent_id", ID, primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("frozen", Boolean, nullable=False, default=False),
    Column("sent_count", BigInteger, nullable=False, default=0),
    Column("received_count", BigInteger, nullable=False, default=0),
    Column("create_time", BigInteger, nullable=False),
    Column("last_activity_time", BigInteger, nullable=True),
    CheckConstraint("balance >= 0", name="ck_ledger_wallets_balance_not_negative"),
)

# Every unit that exists was minted here (InitWallets): sum(balance) == sum(amount).
mints = Table(
    "ledger_mints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", ID, ForeignKey("ledger_wallets.agent_id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    CheckConstraint("amount >= 0", name="ck_ledger_mints_amount_not_negative"),
)

transfers = Table(
    "ledger_transfers",
    metadata,
    # Insertion order, for stable newest-first paging.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("request_id", String(200), nullable=False),
    Column("from_agent", ID, ForeignKey("ledger_wallets.agent_id"), nullable=False),
    Column("to_agent", ID, ForeignKey("ledger_wallets.agent_id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("status", String(32), nullable=False),
    Column("failure_reason", String(64), nullable=False, default=""),
    # The sentence explaining a refusal, replayed word for word on a retry.
    Column("failure_detail", Text, nullable=False, default=""),
    Column("initiated_by", String(200), nullable=False),
    Column("conversation_id", String(200), nullable=False, default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("settle_time", BigInteger, nullable=True),
    Column("from_balance_after", BigInteger, nullable=True),
    # Who approved or rejected it, with the request_id of that decision (replays).
    Column("decided_by", String(200), nullable=False, default=""),
    Column("decision_request_id", String(200), nullable=False, default=""),
    # request_id first: the same index answers a batch's idempotency lookup (request ids of
    # many payers at once). Databases made before 2026-11-27 have (from_agent, request_id)
    # here and a separate ix_ledger_transfers_request, which they keep.
    UniqueConstraint("request_id", "from_agent", name="uq_ledger_transfers_payer_request"),
    CheckConstraint("amount > 0", name="ck_ledger_transfers_amount_positive"),
    CheckConstraint("from_agent <> to_agent", name="ck_ledger_transfers_not_self"),
)
Index("ix_ledger_transfers_from", transfers.c.from_agent, transfers.c.seq)
Index("ix_ledger_transfers_to", transfers.c.to_agent, transfers.c.seq)
Index(
    "ix_ledger_transfers_spent", transfers.c.from_agent, transfers.c.status, transfers.c.settle_time
)

# Append-only, hash-chained (see audit.py). Never updated, never deleted.
audit_events = Table(
    "ledger_audit_events",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("event_type", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("agent_id", String(128), nullable=False, default=""),
    Column("transfer_id", String(64), nullable=False, default=""),
    Column("payload_json", Text, nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_ledger_audit_type", audit_events.c.event_type, audit_events.c.sequence)
Index("ix_ledger_audit_time", audit_events.c.create_time)

# One row (id=1): the newest entry. Appenders lock it, which serializes the chain.
audit_head = Table(
    "ledger_audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("sequence", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Events committed with the change they describe; the publisher drains them to JetStream in
# id order, which is commit order: every transaction that inserts rows holds the audit head's
# lock by then (SQLite: its one writer at a time), so a row never becomes visible after a row
# with a higher id. What went out is one number (`outbox_cursor`), not a mark per row.
outbox = Table(
    "ledger_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(300), nullable=False),
    Column("msg_id", String(300), nullable=False),
    Column("message_type", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("create_time", BigInteger, nullable=False),
    # Set per row by versions before 2026-11-27; read once, to place the first cursor.
    Column("published_time", BigInteger, nullable=True),
    # Failed publishes of this row, and the last error (the row the publisher is stuck on).
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
)
# Those versions' index of unpublished rows, dropped at start-up.
_OLD_INDEXES = ("ix_ledger_outbox_pending",)

# One row (id=1): every outbox row with id <= published_through went out (JetStream acked it).
outbox_cursor = Table(
    "ledger_outbox_cursor",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("published_through", BigInteger, nullable=False),
    Column("update_time", BigInteger, nullable=False),
)


def now_us() -> int:
    """Microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


def _create_tables_and_indexes(connection: Connection) -> None:
    """Missing tables, indexes added since a table was created; indexes no longer used go."""
    metadata.create_all(connection)
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(connection, checkfirst=True)
    for name in _OLD_INDEXES:
        connection.execute(text(f"DROP INDEX IF EXISTS {name}"))


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables, the audit chain's head row and the outbox cursor's row; safe
    at every start-up."""
    async with engine.begin() as conn:
        await conn.run_sync(_create_tables_and_indexes)
    await _create_row(engine, audit_head, {"id": 1, "sequence": 0, "hash": GENESIS_HASH})
    await _create_row(engine, outbox_cursor, {"id": 1, "update_time": now_us()}, _first_cursor)


async def _create_row(
    engine: AsyncEngine,
    table: Table,
    values: dict[str, object],
    more: Callable[[AsyncConnection], Awaitable[dict[str, object]]] | None = None,
) -> None:
    """Insert the one row (id=1) of `table` unless it exists (`more` adds computed values)."""
    async with engine.begin() as conn:
        if (await conn.execute(select(table.c.id))).first() is not None:
            return
        row = values | (await more(conn) if more is not None else {})
        try:
            async with conn.begin_nested():
                await conn.execute(insert(table).values(**row))
        except IntegrityError:
            pass  # another process created it first


async def _first_cursor(conn: AsyncConnection) -> dict[str, object]:
    """Where publishing starts: before the first row an earlier version left unpublished, or
    after the last row (none: 0). Rows sent again are dropped by JetStream as duplicates
    within its window; later ones arrive twice (delivery is at least once)."""
    unpublished = select(func.min(outbox.c.id)).where(outbox.c.published_time.is_(None))
    first = (await conn.execute(unpublished)).scalar()
    if first is not None:
        return {"published_through": int(first) - 1}
    last = (await conn.execute(select(func.max(outbox.c.id)))).scalar()
    return {"published_through": int(last or 0)}
