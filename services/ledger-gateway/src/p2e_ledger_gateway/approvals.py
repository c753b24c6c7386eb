"""Operator decisions on PENDING_APPROVAL transfers, inside one write transaction.

Approving settles the transfer now, through the `MoneyBackend` (on Canton: submitted with the
payer's original request_id); the payer's freeze and funds are checked again, and if they
fail, it stays pending and the operator gets FAILED_PRECONDITION. Rejecting moves nothing.
A decision retried with the same request_id replays; any other second decision is
FAILED_PRECONDITION NOT_PENDING.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import NotFound
from p2e_ledger_gateway import events
from p2e_ledger_gateway.book import Book
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.policy import Refusal
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.store import now_us, transfers
from p2e_ledger_gateway.transfers import (
    NOT_PENDING,
    event_payload,
    find,
    lock_wallets,
    log_event,
    precondition,
    require_wallet,
)

if TYPE_CHECKING:
    from p2e_ledger_gateway.money_backend import MoneyBackend


async def approve(
    conn: AsyncConnection,
    money: MoneyBackend,
    transfer_id: str,
    by: str,
    request_id: str,
    currency: Currency,
) -> TransferRecord:
    """Settle a pending transfer; funds and freeze are checked again now."""
    record = await _pending_for_decision(conn, transfer_id, request_id, Status.SETTLED)
    if record.replayed:
        return record
    ids = (record.from_agent, record.to_agent)
    book = Book(await money.wallets(conn, ids, await lock_wallets(conn, ids)))
    payer = require_wallet(book.wallets, record.from_agent)
    require_wallet(book.wallets, record.to_agent)
    if payer.frozen:
        raise precondition("WALLET_FROZEN", record, "the payer's wallet is frozen")
    moved = await money.move(conn, record, book)
    if isinstance(moved, Refusal):
        raise precondition(moved.reason, record, moved.description)
    await money.write_moves(conn, book)
    now = now_us()
    record = replace(
        record,
        status=Status.SETTLED,
        settle_time=now,
        from_balance_after=moved.balance_after,
        decided_by=by,
        decision_request_id=request_id,
    )
    await _save_decision(conn, record)
    payload = (
        event_payload(record, currency)
        | {"from_balance_after": currency.format(moved.balance_after)}
        | moved.evidence
    )
    await log_event(conn, events.APPROVED, record, by, payload, currency, extra=[events.SETTLED])
    return record


async def reject(
    conn: AsyncConnection,
    transfer_id: str,
    by: str,
    reason: str,
    request_id: str,
    currency: Currency,
) -> TransferRecord:
    """Mark a pending transfer REJECTED; nothing moves."""
    record = await _pending_for_decision(conn, transfer_id, request_id, Status.REJECTED)
    if record.replayed:
        return record
    record = replace(
        record,
        status=Status.REJECTED,
        failure_detail=reason or "rejected by an operator",
        decided_by=by,
        decision_request_id=request_id,
    )
    await _save_decision(conn, record)
    payload = event_payload(record, currency) | {"rejection_reason": reason}
    await log_event(conn, events.REJECTED, record, by, payload, currency)
    return record


async def _pending_for_decision(
    conn: AsyncConnection, transfer_id: str, request_id: str, outcome: Status
) -> TransferRecord:
    unlocked = await find(conn, transfer_id)
    if unlocked is None:
        raise NotFound(f"no transfer {transfer_id!r}", reason="TRANSFER_NOT_FOUND")
    await lock_wallets(conn, [unlocked.from_agent, unlocked.to_agent])
    record = await find(conn, transfer_id)  # re-read under the wallet locks
    assert record is not None
    if record.status is Status.PENDING_APPROVAL:
        return record
    if request_id and record.status is outcome and record.decision_request_id == request_id:
        return record.as_replay()
    raise precondition(
        NOT_PENDING,
        record,
        f"transfer {transfer_id} is {record.status.value}, not pending approval",
    )


async def _save_decision(conn: AsyncConnection, record: TransferRecord) -> None:
    await conn.execute(
        update(transfers)
        .where(transfers.c.id == record.id)
        .values(
            status=record.status.value,
            settle_time=record.settle_time,
            from_balance_after=record.from_balance_after,
            failure_detail=record.failure_detail,
            decided_by=record.decided_by,
            decision_request_id=record.decision_request_id,
        )
    )
