"""LedgerService with `ledger.backend: canton` over a real socket.

The money lives on a fake Canton participant (`SpecServer`: every request the gateway sends
and every answer it reads is validated against the JSON Ledger API's OpenAPI spec), given to
`build_app` as the Canton backend's httpx transport. The gateway's SQLite database keeps the
transfer outcomes, approvals, audit chain and outbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from p2e_ledger_gateway.canton.contracts import transfer_command_id
from p2e_ledger_gateway.canton.testing import (
    FAKE_URL,
    CantonSpec,
    FakeParticipant,
    SpecServer,
    fake_settings,
    load_spec,
)
from p2e_ledger_gateway.store import transfers, wallets
from p2engine.ledger.v1 import ledger_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb

AGENTS = ["alice", "bob", "carol", "kid", "boss"]
SUBMIT = "/v2/commands/submit-and-wait-for-transaction"


@pytest.fixture(scope="module")
def spec() -> CantonSpec:
    return load_spec()


@pytest.fixture
def participant(spec: CantonSpec) -> Iterator[SpecServer]:
    server = SpecServer(spec=spec)
    yield server
    assert server.violations == []


@pytest.fixture
def serve_canton(ledger_config_dir: Path, make_settings, serve_ledger, participant) -> Any:
    """`async with serve_canton(database_url) as harness:` the ledger on the fake participant."""
    path = ledger_config_dir / "config.json"
    config = json.loads(path.read_text())
    config["ledger"] |= {"backend": "canton", "json_api_url": FAKE_URL}
    path.write_text(json.dumps(config))
    build = {"canton_transport": participant.transport(), "canton_settings": fake_settings()}
    return lambda url: serve_ledger(make_settings(url), **build)


@pytest.fixture
async def canton(serve_canton, sqlite_url: str) -> AsyncIterator[Any]:
    """The ledger on Canton with the five test agents' wallets (100.00 each)."""
    async with serve_canton(sqlite_url) as harness:
        await harness.init(*AGENTS)
        yield harness


async def on_canton(harness: Any) -> dict[str, Decimal]:
    """Balances as the participant holds them (read straight from Canton)."""
    return {w.agent_id: w.balance for w in await harness.app.ledger.money.backend.list_wallets()}


def submits(server: SpecServer) -> list[str]:
    """Command ids of every submission the participant received."""
    return [body["commands"]["commandId"] for body in server.submits()]


async def recorded(harness: Any, request_id: str) -> list[dict[str, Any]]:
    query = select(transfers).where(transfers.c.request_id == request_id)
    rows = await harness.app.db.read(lambda conn: conn.execute(query))
    return [dict(row) for row in rows.mappings()]


async def newest_audit(harness: Any, n: int = 1) -> list[Any]:
    response = await harness.stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=n))
    return list(response.events)


async def assert_consistent(harness: Any) -> None:
    """The audit chain verifies and Canton's supply equals the gateway's mints."""
    result = await harness.stub.VerifyAudit(pb.VerifyAuditRequest())
    assert result.valid, result.problem
    metrics = await harness.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.total_supply == metrics.total_minted


async def test_wallets_live_on_canton(canton, participant: SpecServer) -> None:
    assert await on_canton(canton) == {a: Decimal("100") for a in AGENTS}
    assert await canton.balance("alice") == "100.00"
    before = len(participant.submits())
    again = await canton.init(*AGENTS)
    assert list(again.created_agent_ids) == [] and len(participant.submits()) == before
    zed = await canton.init("zed", balance="5")
    assert list(zed.created_agent_ids) == ["zed"] and zed.wallets[0].balance.amount == "5.00"
    assert (await on_canton(canton))["zed"] == Decimal("5")
    # The gateway's rows are a registry: no money in SQL.
    rows = await canton.app.db.read(lambda conn: conn.execute(select(wallets.c.balance)))
    assert {row.balance for row in rows} == {0}

    overview = await canton.stub.GetOverview(pb.GetOverviewRequest())
    assert [w.agent_id for w in overview.wallets] == sorted([*AGENTS, "zed"])
    metrics = await canton.stub.GetMetrics(pb.GetMetricsRequest())
    assert (metrics.total_supply.amount, metrics.total_minted.amount) == ("505.00", "505.00")
    assert metrics.wallet_count == 6
    debug = await canton.stub.GetDebugInfo(pb.GetDebugInfoRequest())
    assert (debug.backend, debug.endpoint, debug.connected) == ("canton", FAKE_URL, True)
    assert debug.audit_head_sequence == 6
    missing = await canton.error(canton.stub.GetBalance(pb.GetBalanceRequest(agent_id="ghost")))
    assert missing.code == "NOT_FOUND"
    await assert_consistent(canton)


async def test_transfer_settles_on_canton_exactly_once(canton, participant: SpecServer) -> None:
    before = len(participant.submits())
    transfer = await canton.pay("alice", "bob", "12.5", request_id="r1", reason="lunch")
    assert transfer.status == ledger_pb2.TRANSFER_STATUS_SETTLED and not transfer.replayed
    assert transfer.from_balance_after.amount == "87.50"
    assert submits(participant)[before:] == [transfer_command_id("alice", "r1")]
    assert await on_canton(canton) == {
        **{a: Decimal("100") for a in AGENTS},
        "alice": Decimal("87.5"),
        "bob": Decimal("112.5"),
    }
    bob = await canton.stub.GetBalance(pb.GetBalanceRequest(agent_id="bob"))
    assert (bob.balance.amount, bob.received_count, bob.sent_count) == ("112.50", 1, 0)
    assert bob.HasField("last_activity_time")

    replay = await canton.pay("alice", "bob", "12.50", request_id="r1", reason="lunch")
    assert replay.replayed and (replay.id, replay.create_time) == (
        transfer.id,
        transfer.create_time,
    )
    reused = await canton.error(canton.pay("alice", "bob", "13", request_id="r1", reason="lunch"))
    assert (reused.code, reused.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")
    assert len(participant.submits()) == before + 1
    assert await canton.balance("alice") == "87.50"

    (settled,) = await newest_audit(canton)
    payload = json.loads(settled.payload_json)
    assert payload["canton_command_id"] == transfer_command_id("alice", "r1")
    assert payload["canton_update_id"]
    history = await canton.stub.ListTransactions(pb.ListTransactionsRequest(agent_id="bob"))
    assert [t.id for t in history.transfers] == [transfer.id]
    await assert_consistent(canton)


async def test_insufficient_funds_is_recorded_and_replayed(canton, participant) -> None:
    before = len(participant.submits())
    error = await canton.error(canton.pay("alice", "bob", "100.01", request_id="big"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")
    assert error.metadata["replayed"] == "false"
    assert len(participant.submits()) == before  # refused on Canton's balance, not submitted
    await canton.pay("carol", "alice", "50")
    retry = await canton.error(canton.pay("alice", "bob", "100.01", request_id="big"))
    assert (retry.reason, retry.message) == (error.reason, error.message)
    assert retry.metadata == {"transfer_id": error.metadata["transfer_id"], "replayed": "true"}
    assert (await on_canton(canton))["alice"] == Decimal("150")
    (row,) = await recorded(canton, "big")
    assert (row["status"], row["failure_reason"]) == ("FAILED", "INSUFFICIENT_FUNDS")
    await assert_consistent(canton)


async def test_refusal_by_canton_after_the_read_is_recorded(canton, participant) -> None:
    # Another writer freezes alice's wallet between the gateway's read and its submission.
    def concurrent_freeze(ledger: FakeParticipant, body: dict[str, Any]) -> None:
        participant.faults.before_submit = None
        payer_cid = body["commands"]["commands"][0]["ExerciseCommand"]["contractId"]
        freeze = {
            "ExerciseCommand": {
                "templateId": "#p2engine-wallet:Wallet:Wallet",
                "contractId": payer_cid,
                "choice": "Freeze",
                "choiceArgument": {},
            }
        }
        commands = {**body["commands"], "commands": [freeze], "commandId": "other-writer"}
        ledger.submit({"commands": commands}, "p2engine")

    participant.faults.before_submit = concurrent_freeze
    error = await canton.error(canton.pay("alice", "bob", "5", request_id="f1"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "WALLET_FROZEN")
    unfreeze = pb.UnfreezeWalletRequest(agent_id="alice")
    thawed = await canton.stub.UnfreezeWallet(unfreeze, metadata=canton.operator)
    assert not thawed.frozen
    retry = await canton.error(canton.pay("alice", "bob", "5", request_id="f1"))
    assert (retry.reason, retry.metadata["replayed"]) == ("WALLET_FROZEN", "true")  # never flips
    assert (await on_canton(canton))["alice"] == Decimal("100")
    await assert_consistent(canton)


async def test_callers_and_policies_are_checked_before_canton(canton, participant) -> None:
    before = len(participant.submits())
    denied = await canton.error(canton.pay("alice", "carol", "5", from_agent="bob"))
    assert (denied.code, denied.reason) == ("PERMISSION_DENIED", "NOT_WALLET_OWNER")
    for to, amount, reason in [("carol", "1", "RECIPIENT_NOT_ALLOWED"), ("alice", "51", "")]:
        error = await canton.error(canton.pay("kid", to, amount, request_id=f"k-{to}"))
        assert (error.code, error.reason) == ("FAILED_PRECONDITION", reason or "LIMIT_EXCEEDED")
        again = await canton.error(canton.pay("kid", to, amount, request_id=f"k-{to}"))
        assert again.metadata["replayed"] == "true"
    ghost = await canton.error(canton.pay("alice", "ghost", "1"))
    assert ghost.code == "NOT_FOUND"
    assert len(participant.submits()) == before
    assert await on_canton(canton) == {a: Decimal("100") for a in AGENTS}

    frozen = await canton.stub.FreezeWallet(
        pb.FreezeWalletRequest(agent_id="bob", reason="audit"), metadata=canton.operator
    )
    assert frozen.frozen and (await canton.app.ledger.money.backend.get_balance("bob")).frozen
    error = await canton.error(canton.pay("bob", "alice", "1"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "WALLET_FROZEN")
    audit = [e.event_type for e in await newest_audit(canton, 2)]
    assert audit == ["transfer_failed", "wallet_frozen"]
    await assert_consistent(canton)


async def test_approval_submits_to_canton_on_approve(canton, participant) -> None:
    await canton.pay("alice", "boss", "100")
    await canton.pay("carol", "boss", "100")
    before = len(participant.submits())
    error = await canton.error(canton.pay("boss", "alice", "250", request_id="p1"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "APPROVAL_REQUIRED")
    approval_id = error.metadata["approval_id"]
    assert len(participant.submits()) == before  # it waits in SQL, not on Canton
    assert (await on_canton(canton))["boss"] == Decimal("300")

    request = pb.ApproveTransferRequest(transfer_id=approval_id, request_id="ap1")
    approved = await canton.stub.ApproveTransfer(request, metadata=canton.operator)
    assert approved.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    assert approved.from_balance_after.amount == "50.00"
    assert submits(participant)[before:] == [transfer_command_id("boss", "p1")]
    balances = await on_canton(canton)
    assert (balances["boss"], balances["alice"]) == (Decimal("50"), Decimal("250"))
    replay = await canton.stub.ApproveTransfer(request, metadata=canton.operator)
    assert replay.replayed and replay.id == approved.id
    other = pb.ApproveTransferRequest(transfer_id=approval_id, request_id="ap2")
    not_pending = await canton.error(canton.stub.ApproveTransfer(other, metadata=canton.operator))
    assert not_pending.reason == "NOT_PENDING"
    settled = await canton.pay("boss", "alice", "250", request_id="p1")  # the payer's retry
    assert settled.replayed and settled.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    assert len(participant.submits()) == before + 1
    audit = [e.event_type for e in await newest_audit(canton, 2)]
    assert audit == ["transfer_settled", "transfer_approved"]
    await assert_consistent(canton)


async def test_duplicate_command_lost_answer_and_contention(canton, participant) -> None:
    # A twin submission won: Canton answers DUPLICATE_COMMAND, the gateway records the effect.
    participant.faults.duplicates = 1
    twin = await canton.pay("alice", "bob", "7", request_id="d1")
    assert twin.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    assert json.loads((await newest_audit(canton))[0].payload_json)["canton_replayed"] == "true"
    # The answer is lost after the commit: the client resubmits the same command.
    participant.faults.lost_submits = 1
    lost = await canton.pay("alice", "bob", "3", request_id="l1")
    assert lost.from_balance_after.amount == "90.00"
    # The wallets are locked twice, the third attempt settles.
    participant.faults.contention = 2
    contended = await canton.pay("alice", "bob", "5", request_id="c1")
    assert contended.from_balance_after.amount == "85.00"
    codes = [code for path, _, code in participant.answers if path == SUBMIT]
    assert codes[-3:] == ["LOCAL_VERDICT_LOCKED_CONTRACTS"] * 2 + [""]
    assert "DUPLICATE_COMMAND" in codes
    balances = await on_canton(canton)
    assert (balances["alice"], balances["bob"]) == (Decimal("85"), Decimal("115"))
    for request_id in ("d1", "l1", "c1"):
        assert len(await recorded(canton, request_id)) == 1
    await assert_consistent(canton)


async def test_canton_down_is_unavailable_and_records_nothing(canton, participant) -> None:
    await canton.pay("carol", "boss", "100")
    await canton.pay("bob", "boss", "50")  # boss: 250.00, bob: 50.00
    pending = await canton.error(canton.pay("boss", "alice", "201", request_id="p1"))
    assert pending.reason == "APPROVAL_REQUIRED"
    audit_before = (await canton.stub.VerifyAudit(pb.VerifyAuditRequest())).checked

    participant.faults.server_errors = 10_000
    error = await canton.error(canton.pay("alice", "bob", "5", request_id="down-1"))
    assert (error.code, error.reason) == ("UNAVAILABLE", "CANTON_UNAVAILABLE")
    approve = pb.ApproveTransferRequest(transfer_id=pending.metadata["approval_id"])
    refused = await canton.error(canton.stub.ApproveTransfer(approve, metadata=canton.operator))
    assert refused.code == "UNAVAILABLE"
    balance = await canton.error(canton.stub.GetBalance(pb.GetBalanceRequest(agent_id="bob")))
    assert balance.code == "UNAVAILABLE"
    debug = await canton.stub.GetDebugInfo(pb.GetDebugInfoRequest())
    assert (debug.backend, debug.connected) == ("canton", False)
    assert debug.audit_head_sequence == audit_before  # the gateway's own records still answer
    assert await recorded(canton, "down-1") == []
    assert (await recorded(canton, "p1"))[0]["status"] == "PENDING_APPROVAL"
    assert (await canton.stub.VerifyAudit(pb.VerifyAuditRequest())).checked == audit_before

    participant.faults.server_errors = 0
    retried = await canton.pay("alice", "bob", "5", request_id="down-1")
    assert retried.status == ledger_pb2.TRANSFER_STATUS_SETTLED and not retried.replayed
    assert (await on_canton(canton))["bob"] == Decimal("55")
    await assert_consistent(canton)


async def test_commit_the_gateway_never_recorded_is_recorded_on_retry(canton) -> None:
    # The gateway died after Canton committed and before its own transaction: only Canton
    # knows the transfer. The caller's retry carries the same request_id.
    backend = canton.app.ledger.money.backend
    await backend.transfer("alice", "bob", Decimal("4"), "tip", "lost-1")
    assert await recorded(canton, "lost-1") == []
    transfer = await canton.pay("alice", "bob", "4", request_id="lost-1", reason="tip")
    assert transfer.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    assert transfer.from_balance_after.amount == "96.00"
    assert (await on_canton(canton))["alice"] == Decimal("96")  # moved once
    assert (await canton.pay("alice", "bob", "4", request_id="lost-1", reason="tip")).replayed
    # Had the gateway judged the retry on the balance left, it would have refused it.
    await backend.transfer("carol", "bob", Decimal("100"), "all", "lost-2")
    transfer = await canton.pay("carol", "bob", "100", request_id="lost-2", reason="all")
    assert (transfer.status, transfer.from_balance_after.amount) == (
        ledger_pb2.TRANSFER_STATUS_SETTLED,
        "0.00",
    )
    payload = json.loads((await newest_audit(canton))[0].payload_json)
    assert payload["canton_replayed"] == "true"
    other = await canton.error(canton.pay("carol", "bob", "99", request_id="lost-2", reason="all"))
    assert other.code == "ALREADY_EXISTS"
    await backend.transfer("alice", "bob", Decimal("1"), "x", "lost-3")
    reused = await canton.error(canton.pay("alice", "bob", "500", request_id="lost-3", reason="x"))
    assert (reused.code, reused.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")
    assert await recorded(canton, "lost-3") == []
    assert (await on_canton(canton))["bob"] == Decimal("205")
    await assert_consistent(canton)


async def test_reconcile_records_what_only_canton_knows_once(canton) -> None:
    # Three commits the gateway never recorded and whose callers never retried: carol's left
    # her less than it moved, kid's is above its max_per_transfer (50) — no funds check and
    # no policy can refuse a fact; one transfer recorded the usual way beside them.
    backend = canton.app.ledger.money.backend
    await canton.pay("alice", "bob", "1", request_id="seen-1")
    await backend.transfer("alice", "bob", Decimal("4"), "tip", "lost-1")
    await backend.transfer("carol", "bob", Decimal("100"), "all", "lost-2")
    await backend.transfer("kid", "bob", Decimal("60"), "", "lost-3")
    audit_before = (await canton.stub.VerifyAudit(pb.VerifyAuditRequest())).checked

    found = await canton.app.ledger.reconcile()

    assert [(r.request_id, r.status.value) for r in found] == [
        ("lost-1", "SETTLED"),
        ("lost-2", "SETTLED"),
        ("lost-3", "SETTLED"),
    ]
    assert all(r.initiated_by == "service:ledger-reconciler" for r in found)
    history = await canton.stub.ListTransactions(pb.ListTransactionsRequest(agent_id="alice"))
    assert [(t.request_id, t.amount.amount, t.reason) for t in history.transfers] == [
        ("lost-1", "4.00", "tip"),
        ("seen-1", "1.00", ""),
    ]
    assert history.transfers[0].from_balance_after.amount == "95.00"
    entries = await newest_audit(canton, 3)
    assert [e.actor for e in entries] == ["service:ledger-reconciler"] * 3
    assert all(json.loads(e.payload_json)["canton_replayed"] == "true" for e in entries)
    assert (await canton.stub.VerifyAudit(pb.VerifyAuditRequest())).checked == audit_before + 3
    assert await on_canton(canton) == {  # nothing moved again
        "alice": Decimal("95"),
        "bob": Decimal("265"),
        "carol": Decimal("0"),
        "kid": Decimal("40"),
        "boss": Decimal("100"),
    }
    # Once recorded, never again; the caller's late retry is a replay of that record.
    assert await canton.app.ledger.reconcile() == []
    retry = await canton.pay("alice", "bob", "4", request_id="lost-1", reason="tip")
    assert retry.replayed and retry.id == found[0].id
    assert len(await recorded(canton, "lost-1")) == 1
    await assert_consistent(canton)


async def test_the_gateway_reconciles_at_start_and_then_periodically(
    ledger_config_dir: Path, make_settings, serve_ledger, participant, sqlite_url: str
) -> None:
    path = ledger_config_dir / "config.json"
    config = json.loads(path.read_text())
    config["ledger"] |= {"backend": "canton", "json_api_url": FAKE_URL}
    path.write_text(json.dumps(config))
    build = {
        "canton_transport": participant.transport(),
        "canton_settings": fake_settings(reconcile_seconds=0.2),
    }
    async with serve_ledger(make_settings(sqlite_url), **build) as harness:
        await harness.init("alice", "bob")
        await harness.app.ledger.money.backend.transfer("alice", "bob", Decimal("2"), "", "gap")
        for _ in range(200):  # rounds every 0.2 s: the next one records it
            if await recorded(harness, "gap"):
                break
            await asyncio.sleep(0.1)
        row = (await recorded(harness, "gap"))[0]
        assert (row["status"], row["initiated_by"]) == ("SETTLED", "service:ledger-reconciler")
        await asyncio.sleep(0.5)  # more rounds: nothing recorded twice
        assert len(await recorded(harness, "gap")) == 1
        reconciler = harness.app.reconciler
        assert reconciler is not None and not reconciler.done()
    assert reconciler.cancelled()  # stopped with the gateway


async def test_no_reconciliation_for_the_sql_backend(ledger) -> None:
    assert ledger.app.reconciler is None
    assert await ledger.app.ledger.reconcile() == []


async def run_ring(serve_canton, url: str) -> None:
    ring = ["alice", "bob", "carol"]
    async with serve_canton(url) as harness:
        await harness.init(*ring)
        # 30 transfers around the ring, each sent twice at once with the same request_id.
        calls = [
            harness.pay(ring[n % 3], ring[(n + 1) % 3], f"{n % 4 + 1}", request_id=f"ring-{n}")
            for n in range(30)
            for _twin in range(2)
        ]
        answers = await asyncio.gather(*calls)
        assert all(a.status == ledger_pb2.TRANSFER_STATUS_SETTLED for a in answers)
        assert sum(a.replayed for a in answers) == 30
        expected = {a: Decimal("100") for a in ring}
        for n in range(30):
            expected[ring[n % 3]] -= n % 4 + 1
            expected[ring[(n + 1) % 3]] += n % 4 + 1
        assert await on_canton(harness) == expected
        for n in range(30):
            assert len(await recorded(harness, f"ring-{n}")) == 1
        await assert_consistent(harness)


async def test_concurrent_transfers_and_twins(serve_canton, sqlite_url: str) -> None:
    await run_ring(serve_canton, sqlite_url)


@pytest.mark.postgres
async def test_concurrent_transfers_and_twins_postgres(serve_canton, postgres_url: str) -> None:
    await run_ring(serve_canton, postgres_url)
