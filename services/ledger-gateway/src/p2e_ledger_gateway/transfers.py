"""Transfers inside one database transaction: wallet locks, idempotency, policy, the move of
the money (through the `MoneyBackend`: the guarded debit and the credit in SQL, or one Canton
transaction), the transfer row, its audit entry and its outbox rows, all or nothing.

Every function here takes an open write transaction (`AsyncConnection`) and returns the
recorded outcome. New requests are decided in batches (`create_many`, fed by batcher.py):
one transaction reads what a batch needs once and writes its outcomes together. A refusal for a business reason (insufficient funds, a policy) is
*recorded* as a FAILED transfer and committed, so a retry with the same request_id replays
it; `outcome_error` turns a non-settled outcome into the error the RPC returns.
Operator decisions on pending transfers are in approvals.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    P2EError,
    PreconditionViolation,
)
from p2e_kit.ids import new_id
from p2e_kit.prepared import unread_write
from p2e_ledger_gateway import audit, events
from p2e_ledger_gateway.book import Book
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
# By request id alone (the leading column of the payer + request_id unique index: one lookup
# per id whatever the payers' histories), the pairs picked out in Python.
_BY_REQUESTS = select(transfers).where(
    transfers.c.request_id.in_(bindparam("rids", expanding=True))
)
_SPENT = (
    select(transfers.c.from_agent, func.sum(transfers.c.amount))
    .where(
        transfers.c.from_agent.in_(bindparam("ids", expanding=True)),
        transfers.c.status == Status.SETTLED.value,
        transfers.c.settle_time > bindparam("since"),
    )
    .group_by(transfers.c.from_agent)
)
_INSERT_TRANSFER = unread_write(insert(transfers))
_INSERT_OUTBOX = unread_write(insert(outbox))


async def lock_wallets(conn: AsyncConnection, agent_ids: Iterable[str]) -> dict[str, WalletRecord]:
    """The named wallets that exist, locked in agent_id order (PostgreSQL) for this transaction."""
    query = _WALLETS if conn.dialect.name == "sqlite" else _WALLETS_LOCKED
    rows = (await conn.execute(query, {"ids": sorted(set(agent_ids))})).mappings().all()
    return {row["agent_id"]: WalletRecord.from_row(row) for row in rows}


async def find_by_requests(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], TransferRecord]:
    """The transfers already recorded for these (payer, request_id) keys."""
    wanted = set(keys)
    if not wanted:
        return {}
    params = {"rids": sorted({rid for _, rid in wanted})}
    found = {}
    for row in (await conn.execute(_BY_REQUESTS, params)).mappings().all():
        key = (row["from_agent"], row["request_id"])
        if key in wanted:
            found[key] = TransferRecord.from_row(row)
    return found


async def find(conn: AsyncConnection, transfer_id: str) -> TransferRecord | None:
    row = (await conn.execute(select(transfers).where(transfers.c.id == transfer_id))).mappings()
    found = row.first()
    return TransferRecord.from_row(found) if found else None


async def spent_last_day(
    conn: AsyncConnection, agent_ids: Iterable[str], now: int
) -> dict[str, int]:
    """What each of these payers settled in the last 24 hours (0 for none)."""
    ids = sorted(set(agent_ids))
    if not ids:
        return {}
    rows = (await conn.execute(_SPENT, {"ids": ids, "since": now - DAY_US})).all()
    return {agent: 0 for agent in ids} | {str(agent): int(total) for agent, total in rows}


Item = tuple["TransferRequest", Policy]


async def create_many(
    conn: AsyncConnection, money: MoneyBackend, items: Sequence[Item], currency: Currency
) -> list[TransferRecord | P2EError]:
    """Record the outcome of each new request, or replay the one already recorded, in order.

    The wallets involved are read (and locked, in agent order) once, the recorded requests
    and the payers' last-day spending too; each request is then decided against the `Book`
    the earlier ones left, and the outcomes are written together: the changed wallets, the
    transfer rows, their outbox rows and audit entries. A request refused with an error
    before anything is recorded (unknown wallet, request_id reused with other parameters)
    gets that error in its place; the others are unaffected.
    """
    ids = sorted({a for request, _ in items for a in (request.from_agent, request.to_agent)})
    book = Book(await money.wallets(conn, ids, await lock_wallets(conn, ids)))
    recorded = await find_by_requests(conn, [(r.from_agent, r.request_id) for r, _ in items])
    now = now_us()
    spent = await spent_last_day(conn, [r.from_agent for r, p in items if p.daily_cap], now)
    outcomes: list[TransferRecord | P2EError] = []
    new: list[tuple[str, TransferRecord, str, dict[str, str]]] = []
    for request, policy in items:
        key = (request.from_agent, request.request_id)
        try:
            previous = recorded.get(key)
            if previous is not None:
                outcomes.append(_replay(previous, request, currency))
                continue
            record, event, payload = await _decide(
                conn, money, book, spent, request, policy, currency, now
            )
        except P2EError as error:
            outcomes.append(error)
            continue
        recorded[key] = record
        outcomes.append(record)
        new.append((event, record, record.initiated_by, payload))
    await money.write_moves(conn, book)
    if new:
        await conn.execute(_INSERT_TRANSFER, [record.row() for _, record, _, _ in new])
        await log_events(conn, new, currency)
    return outcomes


async def create(
    conn: AsyncConnection,
    money: MoneyBackend,
    request: TransferRequest,
    policy: Policy,
    currency: Currency,
) -> TransferRecord:
    """`create_many` of one request: its outcome, or its error raised."""
    outcome = (await create_many(conn, money, [(request, policy)], currency))[0]
    if isinstance(outcome, P2EError):
        raise outcome
    return outcome


async def _decide(
    conn: AsyncConnection,
    money: MoneyBackend,
    book: Book,
    spent: dict[str, int],
    request: TransferRequest,
    policy: Policy,
    currency: Currency,
    now: int,
) -> tuple[TransferRecord, str, dict[str, str]]:
    """The outcome of a new request (settled, failed or pending), its event and payload."""
    payer = require_wallet(book.wallets, request.from_agent)
    require_wallet(book.wallets, request.to_agent)
    verdict, refusal = _judge(payer, request, policy, currency, spent.get(payer.agent_id, 0))
    record = _new(request, now)
    if refusal is not None or verdict is Verdict.NEEDS_APPROVAL:
        # A move the backend made for this request but the gateway never recorded is the outcome.
        moved: Moved | Refusal | None = await money.already_moved(conn, record)
    else:
        moved = None
    if moved is None:
        if refusal is not None:
            return _refused(record, refusal, currency)
        if verdict is Verdict.NEEDS_APPROVAL:
            record = replace(record, status=Status.PENDING_APPROVAL)
            return record, events.PENDING, event_payload(record, currency)
        moved = await money.move(conn, record, book)
        if isinstance(moved, Refusal):
            return _refused(record, moved, currency)
    if payer.agent_id in spent:  # the later requests of this batch see it in the daily cap
        spent[payer.agent_id] += record.amount
    return _settled(record, moved, currency)


def _judge(
    payer: WalletRecord, request: TransferRequest, policy: Policy, currency: Currency, spent: int
) -> tuple[Verdict, Refusal | None]:
    """The payer's policy, then its funds."""
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


def _refused(
    record: TransferRecord, refusal: Refusal, currency: Currency
) -> tuple[TransferRecord, str, dict[str, str]]:
    record = replace(
        record,
        status=Status.FAILED,
        failure_reason=refusal.reason,
        failure_detail=refusal.description,
    )
    payload = event_payload(record, currency) | {"failure_reason": refusal.reason}
    return record, events.FAILED, payload


def _settled(
    record: TransferRecord, moved: Moved, currency: Currency
) -> tuple[TransferRecord, str, dict[str, str]]:
    record = record.settled(moved.balance_after)
    payload = (
        event_payload(record, currency)
        | {"from_balance_after": currency.format(moved.balance_after)}
        | moved.evidence
    )
    return record, events.SETTLED, payload


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
    await log_events(conn, [(event, record, actor, payload)], currency, extra=extra)


async def log_events(
    conn: AsyncConnection,
    logged: Sequence[tuple[str, TransferRecord, str, dict[str, str]]],
    currency: Currency,
    *,
    extra: list[str] | None = None,
) -> None:
    """For each (event, record, actor, payload) in order: its audit entry and its outbox rows
    (plus those of the `extra` events), all written with two statements.

    The outbox rows are inserted after `audit.append` has locked the chain's head (in a
    group, with the group's COMMIT, after its first append took it): their ids are then given
    in commit order, which the publisher's cursor relies on (store.outbox)."""
    now = now_us()
    rows: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for event, record, actor, payload in logged:
        names = [event, *(extra or [])]
        rows += [events.outbox_row(name, record, currency, now, by=actor) for name in names]
        entries += [
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
    group = group_of(conn)
    if group is None:
        await conn.execute(_INSERT_OUTBOX, rows)
    else:  # with the group's other outbox rows, in order, before its COMMIT
        group.insert_later(_INSERT_OUTBOX, rows)


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
