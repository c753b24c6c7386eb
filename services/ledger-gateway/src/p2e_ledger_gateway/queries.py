"""Read-only views of the ledger: history, audit log, metrics, overview."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_ledger_gateway import paging
from p2e_ledger_gateway.audit import AuditEntry
from p2e_ledger_gateway.records import Metrics, Status, TransferRecord, WalletRecord
from p2e_ledger_gateway.store import audit_events, mints, outbox, outbox_cursor, transfers, wallets


async def wallet(conn: AsyncConnection, agent_id: str) -> WalletRecord | None:
    row = (await conn.execute(select(wallets).where(wallets.c.agent_id == agent_id))).mappings()
    found = row.first()
    return WalletRecord.from_row(found) if found else None


async def all_wallets(conn: AsyncConnection) -> list[WalletRecord]:
    rows = (await conn.execute(select(wallets).order_by(wallets.c.agent_id))).mappings().all()
    return [WalletRecord.from_row(row) for row in rows]


async def transactions(
    conn: AsyncConnection, agent_id: str, size: int, token: str
) -> tuple[list[TransferRecord], str]:
    """A wallet's transfers, sent and received, newest first."""
    after = paging.decode(token, "transactions", agent_id)
    query = select(transfers).where(
        or_(transfers.c.from_agent == agent_id, transfers.c.to_agent == agent_id)
    )
    if after is not None:
        query = query.where(transfers.c.seq < after)
    rows = (
        (await conn.execute(query.order_by(transfers.c.seq.desc()).limit(size + 1)))
        .mappings()
        .all()
    )
    records = [TransferRecord.from_row(row) for row in rows[:size]]
    next_token = ""
    if len(rows) > size:
        next_token = paging.encode("transactions", agent_id, int(rows[size - 1]["seq"]))
    return records, next_token


async def audit_log(
    conn: AsyncConnection, size: int, token: str, since: int | None, event_type: str
) -> tuple[list[AuditEntry], str]:
    """Audit entries, newest first, optionally since a time and of one type."""
    key = f"{since or 0}/{event_type}"
    after = paging.decode(token, "audit", key)
    query = select(audit_events)
    if after is not None:
        query = query.where(audit_events.c.sequence < after)
    if since is not None:
        query = query.where(audit_events.c.create_time >= since)
    if event_type:
        query = query.where(audit_events.c.event_type == event_type)
    query = query.order_by(audit_events.c.sequence.desc()).limit(size + 1)
    rows = (await conn.execute(query)).mappings().all()
    entries = [AuditEntry(**dict(row)) for row in rows[:size]]
    next_token = paging.encode("audit", key, entries[-1].sequence) if len(rows) > size else ""
    return entries, next_token


async def metrics(conn: AsyncConnection, balances: list[int]) -> Metrics:
    """Supply from the backend's `balances`; mints and transfer counts from this database."""
    minted = (await conn.execute(select(func.coalesce(func.sum(mints.c.amount), 0)))).scalar_one()
    by_status = {
        status: (int(n), int(total))
        for status, n, total in (
            await conn.execute(
                select(
                    transfers.c.status,
                    func.count(),
                    func.coalesce(func.sum(transfers.c.amount), 0),
                ).group_by(transfers.c.status)
            )
        ).all()
    }
    settled = by_status.get(Status.SETTLED.value, (0, 0))
    return Metrics(
        total_supply=sum(balances),
        total_minted=int(minted),
        volume=settled[1],
        transaction_count=settled[0],
        wallet_count=len(balances),
        failed_count=by_status.get(Status.FAILED.value, (0, 0))[0],
        pending_count=by_status.get(Status.PENDING_APPROVAL.value, (0, 0))[0],
    )


async def outbox_pending(conn: AsyncConnection) -> int:
    """Outbox rows after the saved cursor (the publisher saves it within a fraction of a
    second of sending them)."""
    cursor = select(outbox_cursor.c.published_through).where(outbox_cursor.c.id == 1)
    query = select(func.count()).select_from(outbox).where(outbox.c.id > cursor.scalar_subquery())
    return int((await conn.execute(query)).scalar_one())
