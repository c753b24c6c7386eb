"""`transfers.create_many` on a real SQLite ledger: several requests decided in one batch.

Each request sees the wallets the earlier ones left; errors take their item's place; every
batch leaves the books consistent (balances, counters, audit chain, outbox rows and the
messages they expand into).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import RowMapping, Table, select

from p2e_kit.channels import Caller
from p2e_kit.db import create_engine
from p2e_kit.errors import AlreadyExists, FailedPrecondition, NotFound, P2EError
from p2e_ledger_gateway import events, store, transfers
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.money_backend import SqlMoney
from p2e_ledger_gateway.policy import NO_POLICY, Policy
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.transfers import TransferRequest

OPERATOR = Caller("operator", "ops")
EVENT = {Status.SETTLED: events.SETTLED, Status.FAILED: events.FAILED}
Outcome = TransferRecord | P2EError


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test on SQLite and on PostgreSQL (whose writer runs the batch's statements over
    arrays)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    db = Database(create_engine(database_url))
    await store.create_schema(db.engine)
    ledger = Ledger(db, LedgerOptions())
    await ledger.init_wallets(OPERATOR, ["a", "b", "c", "d"], "0.10", "")  # 10 minor units each
    yield ledger
    await db.close()


def req(payer: str, payee: str, amount: int, rid: str) -> TransferRequest:
    return TransferRequest(payer, payee, amount, "", rid, f"agent:{payer}")


async def batch(ledger: Ledger, *items: TransferRequest | transfers.Item) -> list[Outcome]:
    pairs = [i if isinstance(i, tuple) else (i, NO_POLICY) for i in items]
    money, currency = SqlMoney(ledger.db, ledger.currency), ledger.currency
    return await ledger.db.write(lambda c: transfers.create_many(c, money, pairs, currency))


def record(outcome: Outcome) -> TransferRecord:
    assert isinstance(outcome, TransferRecord), outcome
    return outcome


def statuses(outcomes: list[Outcome]) -> list[tuple[Status, str]]:
    return [(record(o).status, record(o).failure_reason) for o in outcomes]


async def rows(ledger: Ledger, table: Table, order: Any) -> list[RowMapping]:
    result = await ledger.db.read(lambda conn: conn.execute(select(table).order_by(order)))
    return list(result.mappings().all())


async def balances(ledger: Ledger) -> dict[str, int]:
    return {a: (await ledger.get_balance(OPERATOR, a)).balance for a in "abcd"}


async def assert_consistent(ledger: Ledger) -> None:
    """Wallets, transfers, mints, audit entries and outbox rows all tell the same story."""
    assert (await ledger.verify_audit()).valid
    metrics = await ledger.metrics()
    assert metrics.total_supply == metrics.total_minted
    recorded = await rows(ledger, store.transfers, store.transfers.c.seq)
    settled = [t for t in recorded if t["status"] == Status.SETTLED.value]
    minted = {m["agent_id"]: m["amount"] for m in await rows(ledger, store.mints, store.mints.c.id)}
    for wallet in await rows(ledger, store.wallets, store.wallets.c.agent_id):
        agent = wallet["agent_id"]
        sent = [t for t in settled if t["from_agent"] == agent]
        received = [t for t in settled if t["to_agent"] == agent]
        total = minted[agent] - sum(t["amount"] for t in sent) + sum(t["amount"] for t in received)
        assert wallet["balance"] == total >= 0
        assert (wallet["sent_count"], wallet["received_count"]) == (len(sent), len(received))
        if sent or received:
            newest = max(t["settle_time"] for t in sent + received)
            assert wallet["last_activity_time"] >= newest
        else:
            assert wallet["last_activity_time"] is None
    audit = await rows(ledger, store.audit_events, store.audit_events.c.sequence)
    logged = [(e["transfer_id"], e["event_type"]) for e in audit if e["transfer_id"]]
    assert logged == [(t["id"], EVENT.get(Status(t["status"]), events.PENDING)) for t in recorded]
    outbox = await rows(ledger, store.outbox, "id")  # one row per event, in the audit's order
    assert [(o["message_type"], o["msg_id"]) for o in outbox] == [
        (events.MESSAGES_ROW, events.msg_id(transfer_id, event)) for transfer_id, event in logged
    ]
    sent = Counter(
        message_id.split(":")[0]
        for o in outbox
        for *_, message_id in events.messages(
            o["subject"], o["body"], o["message_type"], o["msg_id"]
        )
    )
    expected = {t["id"]: 3 if t["status"] == Status.SETTLED.value else 2 for t in recorded}
    assert sent == expected  # settled: payer, payee, artifact; otherwise payer, artifact


async def test_money_received_earlier_in_the_batch_can_be_spent(ledger: Ledger) -> None:
    outcomes = await batch(ledger, req("a", "b", 10, "r1"), req("b", "c", 15, "r2"))
    assert statuses(outcomes) == [(Status.SETTLED, "")] * 2
    assert [record(o).from_balance_after for o in outcomes] == [0, 5]
    assert await balances(ledger) == {"a": 0, "b": 5, "c": 25, "d": 10}
    await assert_consistent(ledger)


async def test_same_request_twice_in_one_batch_is_a_replay(ledger: Ledger) -> None:
    first, again = await batch(ledger, req("a", "b", 3, "r1"), req("a", "b", 3, "r1"))
    assert record(again).replayed and not record(first).replayed
    assert record(again).id == record(first).id
    assert await balances(ledger) == {"a": 7, "b": 13, "c": 10, "d": 10}
    later = record((await batch(ledger, req("a", "b", 3, "r1")))[0])  # and in a later batch
    assert (later.replayed, later.id) == (True, record(first).id)
    await assert_consistent(ledger)


async def test_request_id_reused_with_other_parameters_is_refused_in_place(ledger: Ledger) -> None:
    reused = [req("a", "c", 3, "r1"), req("a", "b", 4, "r1")]  # other payee, other amount
    others = [req("b", "a", 1, "r1"), req("c", "d", 2, "r2")]  # b's r1 is another request
    outcomes = await batch(ledger, req("a", "b", 3, "r1"), *reused, *others)
    first = record(outcomes[0])
    for reused in outcomes[1:3]:
        assert isinstance(reused, AlreadyExists)
        assert (reused.reason, reused.metadata["transfer_id"]) == ("REQUEST_ID_REUSED", first.id)
    assert record(outcomes[3]).status is record(outcomes[4]).status is Status.SETTLED
    assert await balances(ledger) == {"a": 8, "b": 12, "c": 8, "d": 12}
    await assert_consistent(ledger)


async def test_unknown_wallet_is_not_found_in_place(ledger: Ledger) -> None:
    outcomes = await batch(
        ledger, req("a", "ghost", 1, "r1"), req("ghost", "a", 1, "r1"), req("a", "b", 2, "r2")
    )
    assert [getattr(o, "reason", "") for o in outcomes[:2]] == ["WALLET_NOT_FOUND"] * 2
    assert all(isinstance(o, NotFound) for o in outcomes[:2])
    assert record(outcomes[2]).status is Status.SETTLED
    assert await balances(ledger) == {"a": 8, "b": 12, "c": 10, "d": 10}
    await assert_consistent(ledger)


async def test_insufficient_funds_mid_batch_fail_and_later_see_the_balance(ledger: Ledger) -> None:
    outcomes = await batch(
        ledger,
        req("b", "c", 15, "r1"),  # b holds 10
        req("a", "b", 10, "r2"),
        req("b", "c", 15, "r3"),  # b holds 20
        req("b", "d", 6, "r4"),  # b holds 5
        req("b", "d", 5, "r5"),
    )
    short, ok = (Status.FAILED, transfers.INSUFFICIENT_FUNDS), (Status.SETTLED, "")
    assert statuses(outcomes) == [short, ok, ok, short, ok]
    assert "balance 0.10 is below the amount 0.15" in record(outcomes[0]).failure_detail
    assert "balance 0.05 is below the amount 0.06" in record(outcomes[3]).failure_detail
    assert await balances(ledger) == {"a": 0, "b": 0, "c": 25, "d": 15}
    replay = record((await batch(ledger, req("b", "c", 15, "r1")))[0])
    assert (replay.replayed, replay.status) == (True, Status.FAILED)
    await assert_consistent(ledger)


async def test_daily_cap_counts_what_the_batch_settled_before(ledger: Ledger) -> None:
    capped = Policy(daily_cap=8)
    await batch(ledger, (req("a", "b", 3, "r0"), capped))  # settled in an earlier batch
    outcomes = await batch(
        ledger,
        (req("a", "c", 4, "r1"), capped),  # 7 of 8
        (req("a", "d", 2, "r2"), capped),  # 9: crosses the cap
        (req("a", "b", 1, "r3"), capped),  # 8: the failed one did not count
        (req("a", "b", 1, "r4"), capped),  # 9
    )
    cap, ok = (Status.FAILED, "DAILY_CAP_EXCEEDED"), (Status.SETTLED, "")
    assert statuses(outcomes) == [ok, cap, ok, cap]
    assert await balances(ledger) == {"a": 2, "b": 14, "c": 14, "d": 10}
    await assert_consistent(ledger)


async def test_approval_threshold_makes_a_pending_that_moves_nothing(ledger: Ledger) -> None:
    policy = Policy(approval_threshold=5, daily_cap=9)
    outcomes = await batch(
        ledger,
        (req("a", "b", 6, "r1"), policy),  # above the threshold: pending
        (req("a", "c", 5, "r2"), policy),
        (req("a", "d", 4, "r3"), policy),  # the pending 6 counts neither as money nor as spent
    )
    assert [record(o).status for o in outcomes] == [Status.PENDING_APPROVAL, *[Status.SETTLED] * 2]
    assert record(outcomes[0]).settle_time is None
    assert await balances(ledger) == {"a": 1, "b": 10, "c": 15, "d": 14}
    assert (await ledger.metrics()).pending_count == 1
    await assert_consistent(ledger)


async def test_outcomes_and_rows_follow_the_order_of_the_items(ledger: Ledger) -> None:
    items = [
        (req("c", "a", 2, "x1"), NO_POLICY),
        (req("a", "b", 50, "x2"), NO_POLICY),  # insufficient
        (req("a", "ghost", 1, "x3"), NO_POLICY),
        (req("b", "a", 3, "x4"), Policy(approval_threshold=1)),
        (req("d", "c", 1, "x5"), NO_POLICY),
        (req("a", "d", 12, "x6"), NO_POLICY),  # 10 + 2 from c
    ]
    outcomes = await batch(ledger, *items)
    assert isinstance(outcomes[2], NotFound)
    kept = [record(o) for i, o in enumerate(outcomes) if i != 2]
    assert [r.request_id for r in kept] == ["x1", "x2", "x4", "x5", "x6"]
    recorded = await rows(ledger, store.transfers, store.transfers.c.seq)
    assert [t["id"] for t in recorded] == [r.id for r in kept]
    outbox = await rows(ledger, store.outbox, "id")
    assert list(dict.fromkeys(o["msg_id"].split(":")[0] for o in outbox)) == [r.id for r in kept]
    assert await balances(ledger) == {"a": 0, "b": 10, "c": 9, "d": 21}
    await assert_consistent(ledger)


async def test_concurrent_transfers_through_the_ledger_never_overspend(ledger: Ledger) -> None:
    transfer = partial(ledger.create_transfer, Caller("agent", "a"), from_agent="a", to_agent="b")

    async def pay(n: int) -> TransferRecord | P2EError:  # 14 payments of 1 from a wallet of 10
        try:
            return await transfer(amount="0.01", reason="", request_id=f"c{n}")
        except FailedPrecondition as error:
            return error

    outcomes = await asyncio.gather(*(pay(n) for n in range(14)))
    refused = [o for o in outcomes if isinstance(o, FailedPrecondition)]
    assert len(refused) == 4
    assert {o.reason for o in refused} == {transfers.INSUFFICIENT_FUNDS}
    assert await balances(ledger) == {"a": 0, "b": 20, "c": 10, "d": 10}
    await assert_consistent(ledger)
