"""ListTransactions, ListAuditEvents, VerifyAudit, GetOverview over a real socket."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from p2engine.ledger.v1 import ledger_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb


async def test_list_transactions_newest_first_sent_and_received(ledger) -> None:
    await ledger.pay("alice", "bob", "1", request_id="t1")
    await ledger.pay("bob", "alice", "2", request_id="t2")
    await ledger.pay("carol", "bob", "3", request_id="t3")  # not alice's
    await ledger.error(ledger.pay("alice", "bob", "500", request_id="t4"))
    response = await ledger.stub.ListTransactions(pb.ListTransactionsRequest(agent_id="alice"))
    assert [t.request_id for t in response.transfers] == ["t4", "t2", "t1"]
    assert response.transfers[0].status == ledger_pb2.TRANSFER_STATUS_FAILED
    assert response.next_page_token == ""


async def test_list_transactions_pages(ledger) -> None:
    for n in range(7):
        await ledger.pay("alice", "bob", "1", request_id=f"p{n}")
    seen, token = [], ""
    while True:
        page = await ledger.stub.ListTransactions(
            pb.ListTransactionsRequest(agent_id="bob", page_size=3, page_token=token)
        )
        seen += [t.request_id for t in page.transfers]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"p{n}" for n in reversed(range(7))]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.ListTransactionsRequest(agent_id="ghost"), "NOT_FOUND"),
        (pb.ListTransactionsRequest(agent_id="alice", page_token="garbage!"), "INVALID_ARGUMENT"),
        (pb.ListTransactionsRequest(agent_id="alice", page_size=-1), "INVALID_ARGUMENT"),
    ],
)
async def test_list_transactions_errors(ledger, request_, code) -> None:
    error = await ledger.error(ledger.stub.ListTransactions(request_))
    assert error.code == code


async def test_page_token_of_another_wallet_is_invalid(ledger) -> None:
    for n in range(3):
        await ledger.pay("alice", "bob", "1", request_id=f"x{n}")
    page = await ledger.stub.ListTransactions(
        pb.ListTransactionsRequest(agent_id="bob", page_size=1)
    )
    request = pb.ListTransactionsRequest(agent_id="alice", page_token=page.next_page_token)
    error = await ledger.error(ledger.stub.ListTransactions(request))
    assert (error.code, error.field_violations[0].field) == ("INVALID_ARGUMENT", "page_token")


async def test_list_audit_events_newest_first_with_filters_and_pages(ledger) -> None:
    await ledger.pay("alice", "bob", "1")
    await ledger.error(ledger.pay("alice", "bob", "1000"))
    response = await ledger.stub.ListAuditEvents(pb.ListAuditEventsRequest())
    sequences = [e.sequence for e in response.events]
    assert sequences == list(range(7, 0, -1))
    assert [e.event_type for e in response.events[:2]] == ["transfer_failed", "transfer_settled"]
    newest = response.events[0]
    assert newest.prev_hash == response.events[1].hash and len(newest.hash) == 64
    assert '"failure_reason":"INSUFFICIENT_FUNDS"' in newest.payload_json

    created = await ledger.stub.ListAuditEvents(
        pb.ListAuditEventsRequest(event_type="wallet_created", page_size=2)
    )
    assert [e.sequence for e in created.events] == [5, 4]
    rest = await ledger.stub.ListAuditEvents(
        pb.ListAuditEventsRequest(
            event_type="wallet_created", page_size=2, page_token=created.next_page_token
        )
    )
    assert [e.sequence for e in rest.events] == [3, 2]

    since = Timestamp()
    since.CopyFrom(response.events[1].create_time)
    recent = await ledger.stub.ListAuditEvents(pb.ListAuditEventsRequest(since=since))
    assert [e.sequence for e in recent.events] == [7, 6]


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListAuditEventsRequest(event_type="transfer_exploded"),
        pb.ListAuditEventsRequest(page_token="nope"),
        pb.ListAuditEventsRequest(page_size=-3),
    ],
)
async def test_list_audit_events_errors(ledger, request_) -> None:
    error = await ledger.error(ledger.stub.ListAuditEvents(request_))
    assert error.code == "INVALID_ARGUMENT"


async def test_verify_audit_valid_then_finds_tampering(ledger) -> None:
    await ledger.pay("alice", "bob", "1")
    await ledger.pay("bob", "carol", "2")
    result = await ledger.stub.VerifyAudit(pb.VerifyAuditRequest())
    assert (result.valid, result.checked, result.first_bad_sequence) == (True, 7, 0)
    await ledger.app.db.write(
        lambda conn: conn.execute(
            text("UPDATE ledger_audit_events SET payload_json = '{}' WHERE sequence = 6")
        )
    )
    result = await ledger.stub.VerifyAudit(pb.VerifyAuditRequest())
    assert (result.valid, result.first_bad_sequence, result.checked) == (False, 6, 5)
    assert result.problem


async def test_audit_chain_survives_every_kind_of_write(ledger) -> None:
    await ledger.pay("alice", "boss", "100")
    await ledger.error(ledger.pay("boss", "alice", "201"))
    await ledger.stub.FreezeWallet(pb.FreezeWalletRequest(agent_id="kid"), metadata=ledger.operator)
    await ledger.stub.UnfreezeWallet(
        pb.UnfreezeWalletRequest(agent_id="kid"), metadata=ledger.operator
    )
    await ledger.init("zed")
    result = await ledger.stub.VerifyAudit(pb.VerifyAuditRequest())
    assert result.valid and result.checked == 10


async def test_overview_shows_activity(ledger) -> None:
    await ledger.pay("alice", "bob", "1")
    overview = await ledger.stub.GetOverview(pb.GetOverviewRequest())
    by_id = {w.agent_id: w for w in overview.wallets}
    assert (by_id["alice"].sent_count, by_id["bob"].received_count) == (1, 1)
    assert by_id["alice"].balance.amount == "99.00"
    assert by_id["alice"].HasField("last_activity_time")
    assert not by_id["carol"].HasField("last_activity_time")
