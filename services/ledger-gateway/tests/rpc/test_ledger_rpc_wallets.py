"""InitWallets, GetBalance, FreezeWallet, UnfreezeWallet, GetOverview over a real socket."""

from __future__ import annotations

import asyncio

import pytest

from p2e_kit.channels import caller_metadata
from p2engine.common.v1 import common_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb

AGENTS = ["alice", "bob", "carol", "kid", "boss"]


async def test_init_wallets_creates_configured_agents(ledger) -> None:
    # The fixture already ran InitWallets for the configured agents.
    overview = await ledger.stub.GetOverview(pb.GetOverviewRequest())
    assert [w.agent_id for w in overview.wallets] == sorted(AGENTS)
    assert {w.balance.amount for w in overview.wallets} == {"100.00"}
    assert {w.balance.asset for w in overview.wallets} == {"P2E"}


async def test_init_wallets_empty_list_means_configured_agents(ledger) -> None:
    response = await ledger.stub.InitWallets(pb.InitWalletsRequest(), metadata=ledger.operator)
    assert sorted(w.agent_id for w in response.wallets) == sorted(AGENTS)
    assert list(response.created_agent_ids) == []


async def test_init_wallets_is_idempotent_and_leaves_existing_untouched(ledger) -> None:
    await ledger.pay("alice", "bob", "30")
    response = await ledger.init("alice", "dave", "dave", balance="7.25")
    assert list(response.created_agent_ids) == ["dave"]
    assert [(w.agent_id, w.balance.amount) for w in response.wallets] == [
        ("alice", "70.00"),
        ("dave", "7.25"),
    ]
    again = await ledger.init("alice", "dave", balance="1000")
    assert list(again.created_agent_ids) == []
    assert await ledger.balance("dave") == "7.25"
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.total_minted.amount == metrics.total_supply.amount == "507.25"


async def test_init_wallets_zero_balance_allowed(ledger) -> None:
    response = await ledger.init("empty", balance="0")
    assert response.wallets[0].balance.amount == "0.00"


@pytest.mark.parametrize("metadata", [caller_metadata("agent", "alice"), ()])
async def test_init_wallets_needs_an_operator(ledger, metadata) -> None:
    error = await ledger.error(
        ledger.stub.InitWallets(pb.InitWalletsRequest(agent_ids=["x"]), metadata=metadata)
    )
    assert error.code == "PERMISSION_DENIED"


async def test_init_wallets_by_a_service(ledger) -> None:
    response = await ledger.stub.InitWallets(
        pb.InitWalletsRequest(agent_ids=["svc_made"]), metadata=caller_metadata("service", "cli")
    )
    assert list(response.created_agent_ids) == ["svc_made"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.InitWalletsRequest(agent_ids=["x"], initial_balance="-5"), "initial_balance"),
        (pb.InitWalletsRequest(agent_ids=["x"], initial_balance="1.234"), "initial_balance"),
        (pb.InitWalletsRequest(agent_ids=["x"], initial_balance="lots"), "initial_balance"),
        (pb.InitWalletsRequest(agent_ids=["bad id"]), "agent_ids"),
        (pb.InitWalletsRequest(agent_ids=["a.b"]), "agent_ids"),
    ],
)
async def test_init_wallets_invalid(ledger, request_, field) -> None:
    error = await ledger.error(ledger.stub.InitWallets(request_, metadata=ledger.operator))
    assert error.code == "INVALID_ARGUMENT"
    assert [v.field for v in error.field_violations] == [field]


async def test_get_balance(ledger) -> None:
    wallet = await ledger.stub.GetBalance(pb.GetBalanceRequest(agent_id="carol"))
    assert (wallet.agent_id, wallet.balance.amount, wallet.frozen) == ("carol", "100.00", False)
    assert wallet.create_time.seconds > 0
    assert not wallet.HasField("last_activity_time")


async def test_get_balance_defaults_to_the_calling_agent(ledger) -> None:
    wallet = await ledger.stub.GetBalance(pb.GetBalanceRequest(), metadata=ledger.agent("bob"))
    assert wallet.agent_id == "bob"


async def test_get_balance_unknown_wallet_is_not_found(ledger) -> None:
    error = await ledger.error(ledger.stub.GetBalance(pb.GetBalanceRequest(agent_id="ghost")))
    assert (error.code, error.reason) == ("NOT_FOUND", "WALLET_NOT_FOUND")


async def test_get_balance_without_an_id_is_invalid(ledger) -> None:
    error = await ledger.error(ledger.stub.GetBalance(pb.GetBalanceRequest()))
    assert error.code == "INVALID_ARGUMENT"


async def test_freeze_blocks_debits_and_unfreeze_lifts_it(ledger) -> None:
    frozen = await ledger.stub.FreezeWallet(
        pb.FreezeWalletRequest(agent_id="alice", reason="audit"), metadata=ledger.operator
    )
    assert frozen.frozen
    error = await ledger.error(ledger.pay("alice", "bob", "1", request_id="while-frozen"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "WALLET_FROZEN")
    await ledger.pay("bob", "alice", "1")  # credits still arrive
    thawed = await ledger.stub.UnfreezeWallet(
        pb.UnfreezeWalletRequest(agent_id="alice"), metadata=ledger.operator
    )
    assert not thawed.frozen
    await ledger.pay("alice", "bob", "2")
    # The refusal was recorded: its retry replays it even after the thaw.
    again = await ledger.error(ledger.pay("alice", "bob", "1", request_id="while-frozen"))
    assert (again.reason, again.metadata["replayed"]) == ("WALLET_FROZEN", "true")
    assert await ledger.balance("alice") == "99.00"


async def test_freeze_is_idempotent(ledger) -> None:
    for _ in range(2):
        wallet = await ledger.stub.FreezeWallet(
            pb.FreezeWalletRequest(agent_id="carol"), metadata=ledger.operator
        )
        assert wallet.frozen
    events = await ledger.stub.ListAuditEvents(
        pb.ListAuditEventsRequest(event_type="wallet_frozen")
    )
    assert len(events.events) == 1


@pytest.mark.parametrize("method", ["FreezeWallet", "UnfreezeWallet"])
async def test_freeze_errors(ledger, method) -> None:
    rpc = getattr(ledger.stub, method)
    make = getattr(pb, f"{method}Request")
    denied = await ledger.error(rpc(make(agent_id="alice"), metadata=ledger.agent("alice")))
    assert denied.code == "PERMISSION_DENIED"
    missing = await ledger.error(rpc(make(agent_id="ghost"), metadata=ledger.operator))
    assert missing.code == "NOT_FOUND"


async def test_debug_info(ledger) -> None:
    info = await ledger.stub.GetDebugInfo(pb.GetDebugInfoRequest(), metadata=ledger.agent("kid"))
    assert (info.backend, info.connected, info.asset, info.scale) == ("sql", True, "P2E", 2)
    assert info.endpoint.startswith("sqlite+aiosqlite:///")
    assert info.audit_head_sequence == 5  # five wallets created
    assert len(info.audit_head_hash) == 64
    assert info.caller == common_pb2.Caller(kind=common_pb2.CALLER_KIND_AGENT, id="kid")
    await ledger.pay("alice", "bob", "1")
    info = await ledger.stub.GetDebugInfo(pb.GetDebugInfoRequest())
    assert info.outbox_pending == 1  # publishing is off here: the transfer_settled event row
    assert info.caller.kind == common_pb2.CALLER_KIND_UNSPECIFIED
    assert (info.transfer_batches, info.batched_transfers) == (1, 1)


async def test_debug_info_counts_the_transfer_batches_and_their_requests(ledger) -> None:
    sends = [ledger.pay("alice", "bob", "0.01", request_id=f"r{n}") for n in range(40)]
    await asyncio.gather(*sends)
    await ledger.pay("alice", "bob", "0.01", request_id="r0")  # a replay is written too
    info = await ledger.stub.GetDebugInfo(pb.GetDebugInfoRequest())
    assert info.batched_transfers == 41
    # How many batches the 40 sent together took depends on when they arrived (the exact
    # counting is test_ledger_batcher's): at least one more than the replay's, at most one each.
    assert 2 <= info.transfer_batches <= 41
