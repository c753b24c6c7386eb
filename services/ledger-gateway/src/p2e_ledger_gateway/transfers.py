"""Transfers inside one database transaction: wallet locks, idempotency, policy, the move of
the money (through the `MoneyBackend`: the guarded debit and the credit in SQL, or one Canton
transaction), the transfer row, its audit entry and its outbox rows, all or nothing.

Every function here takes an open write transaction (`AsyncConnection`) and returns the
recorded outcome. A refusal for a business reason (insufficient funds, a policy) is
*recorded* as a FAILED transfer and committed, so a retry with the same request_id replays
it; `outcome_error` turns a non-settled outcome into the error the RPC returns.
Operator decisions on pending transfers are in approvals.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    P2EError,
    PreconditionViolation,
)
from p2e_kit.ids import new_id
from p2e_ledger_gateway import audit, events
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.policy import DAY_US, Policy, Refusal, Verdict, evaluate
from p2e_ledger_gateway.records import Status, TransferRecord, WalletRecord
from p2e_ledger_gateway.sqlite_thread import group_of
from p2e_ledger_gateway.store import now_us, outbox, transfers, wallets

if TYPE_CHECKING:
    from p2e_ledger_gateway.money_backend import MoneyBackend, Moved

INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
TRANSFER_REJECTED = "TRANSFER_REJECTED"
NOT_PENDING = "NOT_PENDING"


@dataclass(frozen=True)
class TransferRequest:
    from_agent: str
    to_agent: str
    amount: int
    reason: str
    request_id: str
    initiated_by: str
    conversation_id: str = ""


# Built once: the hot path only binds parameters (no statement construction per call).
_WALLETS = (
    select(wallets)
    .where(wallets.c.agent_id.in_(bindparam("ids", expanding=True)))
    .order_by(wallets.c.agent_id)
)
_WALLETS_LOCKED = _WALLETS.with_for_update()
_BY_REQUEST = select(transfers).where(
    transfers.c.from_agent == bindparam("payer"), transfers.c.request_id == bindparam("rid")
)
_DEBIT = (
    update(wallets)
    .where(wallets.c.agent_id == bindparam("payer"), wallets.c.balance >= bindparam("amt"))
    .values(
        balance=wallets.c.balance - bindparam("amt"),
        sent_count=wallets.c.sent_count + 1,
        last_activity_time=bindparam("now"),
    )
    .returning(wallets.c.balance)
)
_CREDIT = (
    update(wallets)
    .where(wallets.c.agent_id == bindparam("payee"))
    .values(
        balance=wallets.c.balance + bindparam("amt"),
        received_count=wallets.c.received_count + 1,
        last_activity_time=bindparam("now"),
    )
)
_INSERT_TRANSFER = insert(transfers)
_INSERT_OUTBOX = insert(outbox)


async def lock_wallets(conn: AsyncConnection, agent_ids: Iterable[str]) -> dict[str, WalletRecord]:
    """The named wallets that exist, locked in agent_id order (PostgreSQL) for this transaction."""
    query = _WALLETS if conn.dialect.name == "sqlite" else _WALLETS_LOCKED
    rows = (await conn.execute(query, {"ids": sorted(set(agent_ids))})).mappings().all()
    return {row["agent_id"]: WalletRecord.from_row(row) for row in rows}


async def find_by_request(
    conn: AsyncConnection, from_agent: str, request_id: str
) -> TransferRecord | None:
    params = {"payer": from_agent, "rid": request_id}
    row = (await conn.execute(_BY_REQUEST, params)).mappings().first()
    return TransferRecord.from_row(row) if row else None


async def find(conn: AsyncConnection, transfer_id: str) -> TransferRecord | None:
    row = (await conn.execute(select(transfers).where(transfers.c.id == transfer_id))).mappings()
    found = row.first()
    return TransferRecord.from_row(found) if found else None


async def spent_last_day(conn: AsyncConnection, agent_id: str, now: int) -> int:
    query = select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
        transfers.c.from_agent == agent_id,
        transfers.c.status == Status.SETTLED.value,
        transfers.c.settle_time > now - DAY_US,
    )
    return int((await conn.execute(query)).scalar_one())


async def create(
    conn: AsyncConnection,
    money: MoneyBackend,
    request: TransferRequest,
    policy: Policy,
    currency: Currency,
) -> TransferRecord:
    """Record the outcome of a new request, or replay the one already recorded."""
    ids = (request.from_agent, request.to_agent)
    locked = await lock_wallets(conn, ids)
    previous = await find_by_request(conn, request.from_agent, request.request_id)
    if previous is not None:
        return _replay(previous, request, currency)
    found = await money.wallets(conn, ids, locked)
    for agent in ids:
        require_wallet(found, agent)
    now = now_us()
    verdict, refusal = await _judge(conn, found[request.from_agent], request, policy, currency, now)
    record = _new(request, now)
    if refusal is not None or verdict is Verdict.NEEDS_APPROVAL:
        # A move the backend made for this request but the gateway never recorded is the outcome.
        earlier = await money.already_moved(conn, record)
        if earlier is not None:
            return await _record_settled(conn, record, earlier, currency)
    if refusal is not None:
        return await _record_refusal(conn, record, refusal, currency)
    if verdict is Verdict.NEEDS_APPROVAL:
        return await _record_pending(conn, record, currency)
    return await _settle_new(conn, money, record, currency)


async def _judge(
    conn: AsyncConnection,
    payer: WalletRecord,
    request: TransferRequest,
    policy: Policy,
    currency: Currency,
    now: int,
) -> tuple[Verdict, Refusal | None]:
    """The payer's policy, then its funds."""
    spent = await spent_last_day(conn, payer.agent_id, now) if policy.daily_cap else 0
    verdict, refusal = evaluate(
        policy,
        frozen=payer.frozen,
        to_agent=request.to_agent,
        amount=request.amount,
        spent_last_day=spent,
        currency=currency,
    )
    if refusal is None and payer.balance < request.amount:
        refusal = insufficient(payer.balance, request.amount, currency)
    return verdict, refusal


def require_wallet(found: dict[str, WalletRecord], agent_id: str) -> WalletRecord:
    wallet = found.get(agent_id)
    if wallet is None:
        raise NotFound(f"no wallet for agent {agent_id!r}", reason="WALLET_NOT_FOUND")
    return wallet


def _new(request: TransferRequest, now: int) -> TransferRecord:
    return TransferRecord(
        id=new_id("tr"),
        request_id=request.request_id,
        from_agent=request.from_agent,
        to_agent=request.to_agent,
        amount=request.amount,
        reason=request.reason,
        status=Status.FAILED,
        failure_reason="",
        failure_detail="",
        initiated_by=request.initiated_by,
        conversation_id=request.conversation_id,
        create_time=now,
    )


def _replay(
    previous: TransferRecord, request: TransferRequest, currency: Currency
) -> TransferRecord:
    same = (previous.to_agent, previous.amount, previous.reason) == (
        request.to_agent,
        request.amount,
        request.reason,
    )
    if not same:
        raise AlreadyExists(
            f"request_id {request.request_id!r} of {request.from_agent} was already used for "
            f"{currency.format(previous.amount)} to {previous.to_agent} (transfer {previous.id})",
            reason="REQUEST_ID_REUSED",
            metadata={"transfer_id": previous.id},
        )
    return previous.as_replay()


def insufficient(balance: int, amount: int, currency: Currency) -> Refusal:
    return Refusal(
        INSUFFICIENT_FUNDS,
        f"insufficient funds: balance {currency.format(balance)} is below the amount "
        f"{currency.format(amount)}",
    )


async def _record_refusal(
    conn: AsyncConnection, record: TransferRecord, refusal: Refusal, currency: Currency
) -> TransferRecord:
    record = replace(
        record,
        status=Status.FAILED,
        failure_reason=refusal.reason,
        failure_detail=refusal.description,
    )
    await conn.execute(_INSERT_TRANSFER, record.row())
    payload = event_payload(record, currency) | {"failure_reason": refusal.reason}
    await log_event(conn, events.FAILED, record, record.initiated_by, payload, currency)
    return record


async def _record_pending(
    conn: AsyncConnection, record: TransferRecord, currency: Currency
) -> TransferRecord:
    record = replace(record, status=Status.PENDING_APPROVAL)
    await conn.execute(_INSERT_TRANSFER, record.row())
    await log_event(
        conn, events.PENDING, record, record.initiated_by, event_payload(record, currency), currency
    )
    return record


async def _settle_new(
    conn: AsyncConnection, money: MoneyBackend, record: TransferRecord, currency: Currency
) -> TransferRecord:
    moved = await money.move(conn, record)
    if isinstance(moved, Refusal):
        return await _record_refusal(conn, record, moved, currency)
    return await _record_settled(conn, record, moved, currency)


async def _record_settled(
    conn: AsyncConnection, record: TransferRecord, moved: Moved, currency: Currency
) -> TransferRecord:
    record = replace(
        record,
        status=Status.SETTLED,
        settle_time=record.create_time,
        from_balance_after=moved.balance_after,
    )
    await conn.execute(_INSERT_TRANSFER, record.row())
    payload = (
        event_payload(record, currency)
        | {"from_balance_after": currency.format(moved.balance_after)}
        | moved.evidence
    )
    await log_event(conn, events.SETTLED, record, record.initiated_by, payload, currency)
    return record


async def move(conn: AsyncConnection, record: TransferRecord) -> int | None:
    """Debit the payer (only if the balance covers it) and credit the payee.

    Returns the payer's balance after, or None (nothing changed) when funds are short.
    """
    params = {"payer": record.from_agent, "payee": record.to_agent, "amt": record.amount}
    params["now"] = now_us()
    balance_after = (await conn.execute(_DEBIT, params)).scalar_one_or_none()
    if balance_after is None:
        return None
    if (await conn.execute(_CREDIT, params)).rowcount != 1:
        raise NotFound(f"no wallet for agent {record.to_agent!r}", reason="WALLET_NOT_FOUND")
    return int(balance_after)


def event_payload(record: TransferRecord, currency: Currency) -> dict[str, str]:
    return {
        "request_id": record.request_id,
        "from_agent": record.from_agent,
        "to_agent": record.to_agent,
        "amount": currency.format(record.amount),
        "asset": currency.asset,
        "reason": record.reason,
        "initiated_by": record.initiated_by,
        "status": record.status.value,
    }


async def log_event(
    conn: AsyncConnection,
    event: str,
    record: TransferRecord,
    actor: str,
    payload: dict[str, str],
    currency: Currency,
    *,
    extra: list[str] | None = None,
) -> None:
    """The audit entry and the outbox rows of `event` (plus `extra` events' outbox rows)."""
    now, names = now_us(), [event, *(extra or [])]
    rows = []
    for name in names:
        rows += events.outbox_rows(name, record, currency, now, by=actor)
    group = group_of(conn)
    if group is None:
        await conn.execute(_INSERT_OUTBOX, rows)
    else:  # with the group's other outbox rows, in order, before its COMMIT
        group.insert_later(_INSERT_OUTBOX, rows)
    entries = [
        {
            "event_type": name,
            "actor": actor,
            "agent_id": record.from_agent,
            "transfer_id": record.id,
            "payload": payload,
        }
        for name in names
    ]
    await audit.append(conn, entries)


def precondition(reason: str, record: TransferRecord, description: str) -> FailedPrecondition:
    return FailedPrecondition(
        description,
        reason=reason,
        violations=[PreconditionViolation(reason, f"transfer:{record.id}", description)],
        metadata={"transfer_id": record.id},
    )


def outcome_error(record: TransferRecord) -> P2EError | None:
    """The error a CreateTransfer answer carries for this outcome; None when settled."""
    meta = {"transfer_id": record.id, "replayed": "true" if record.replayed else "false"}
    if record.status is Status.SETTLED:
        return None
    if record.status is Status.PENDING_APPROVAL:
        return FailedPrecondition(
            f"transfer {record.id} needs an operator's approval",
            reason=APPROVAL_REQUIRED,
            violations=[
                PreconditionViolation(
                    APPROVAL_REQUIRED, f"wallet:{record.from_agent}", "above the approval threshold"
                )
            ],
            metadata=meta | {"approval_id": record.id},
        )
    reason = record.failure_reason if record.status is Status.FAILED else TRANSFER_REJECTED
    return FailedPrecondition(
        record.failure_detail or reason,
        reason=reason,
        violations=[
            PreconditionViolation(reason, f"wallet:{record.from_agent}", record.failure_detail)
        ],
        metadata=meta,
    )
