"""CreateTransfer over a real socket: every outcome and error row."""

from __future__ import annotations

import pytest

from p2e_kit.channels import caller_metadata
from p2engine.ledger.v1 import ledger_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb


async def test_settled_transfer_moves_money(ledger) -> None:
    transfer = await ledger.pay("alice", "bob", "12.5", request_id="r1", reason="lunch")
    assert transfer.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    assert (transfer.from_agent, transfer.to_agent) == ("alice", "bob")
    assert (transfer.amount.amount, transfer.amount.asset) == ("12.50", "P2E")
    assert transfer.from_balance_after.amount == "87.50"
    assert (transfer.initiated_by, transfer.reason, transfer.request_id) == (
        "agent:alice",
        "lunch",
        "r1",
    )
    assert transfer.id.startswith("tr_") and not transfer.replayed
    assert await ledger.balance("alice") == "87.50"
    assert await ledger.balance("bob") == "112.50"
    bob = await ledger.stub.GetBalance(pb.GetBalanceRequest(agent_id="bob"))
    assert (bob.received_count, bob.sent_count) == (1, 0)
    assert bob.HasField("last_activity_time")


async def test_explicit_from_agent_equal_to_caller_is_fine(ledger) -> None:
    transfer = await ledger.pay("alice", "bob", "1", from_agent="alice")
    assert transfer.from_agent == "alice"


async def test_debiting_another_agents_wallet_is_denied(ledger) -> None:
    error = await ledger.error(ledger.pay("alice", "carol", "5", from_agent="bob"))
    assert (error.code, error.reason) == ("PERMISSION_DENIED", "NOT_WALLET_OWNER")
    assert await ledger.balance("bob") == "100.00"


@pytest.mark.parametrize("metadata", [(), caller_metadata("service", "orchestrator")])
async def test_transfer_without_agent_or_operator_is_denied(ledger, metadata) -> None:
    request = pb.CreateTransferRequest(
        from_agent="alice", to_agent="bob", amount="1", request_id="x"
    )
    error = await ledger.error(ledger.stub.CreateTransfer(request, metadata=metadata))
    assert error.code == "PERMISSION_DENIED"


async def test_bad_caller_metadata_is_invalid(ledger) -> None:
    request = pb.CreateTransferRequest(to_agent="bob", amount="1", request_id="x")
    error = await ledger.error(
        ledger.stub.CreateTransfer(request, metadata=(("p2e-caller", "root"),))
    )
    assert (error.code, error.field_violations[0].field) == ("INVALID_ARGUMENT", "p2e-caller")


async def test_operator_moves_money_between_any_wallets(ledger) -> None:
    request = pb.CreateTransferRequest(
        from_agent="carol", to_agent="alice", amount="3", request_id="op-1", reason="refund"
    )
    transfer = await ledger.stub.CreateTransfer(request, metadata=ledger.operator)
    assert transfer.initiated_by == "operator:ops"
    audit = await ledger.stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=1))
    assert (audit.events[0].actor, audit.events[0].transfer_id) == ("operator:ops", transfer.id)


async def test_operator_must_name_the_payer(ledger) -> None:
    request = pb.CreateTransferRequest(to_agent="alice", amount="3", request_id="op-2")
    error = await ledger.error(ledger.stub.CreateTransfer(request, metadata=ledger.operator))
    assert (error.code, error.field_violations[0].field) == ("INVALID_ARGUMENT", "from_agent")


@pytest.mark.parametrize(
    "amount",
    [
        "0",
        "0.00",
        "-5",
        "abc",
        "NaN",
        "Infinity",
        "-Infinity",
        "1.001",
        "1e3",
        "",
        "1e400",
        "10000000000000000",
        "1000000000000000.01",
    ],
)
async def test_bad_amounts_are_invalid(ledger, amount) -> None:
    error = await ledger.error(ledger.pay("alice", "bob", amount))
    assert error.code == "INVALID_ARGUMENT"
    assert [v.field for v in error.field_violations] == ["amount"]
    assert await ledger.balance("alice") == "100.00"


async def test_self_transfer_is_invalid(ledger) -> None:
    error = await ledger.error(ledger.pay("alice", "alice", "1"))
    assert (error.code, error.reason) == ("INVALID_ARGUMENT", "SELF_TRANSFER")


async def test_empty_request_id_is_invalid(ledger) -> None:
    request = pb.CreateTransferRequest(to_agent="bob", amount="1")
    error = await ledger.error(ledger.stub.CreateTransfer(request, metadata=ledger.agent("alice")))
    assert (error.code, error.field_violations[0].field) == ("INVALID_ARGUMENT", "request_id")


async def test_unknown_wallets_are_not_found_and_never_created(ledger) -> None:
    error = await ledger.error(ledger.pay("alice", "ghost", "1"))
    assert error.code == "NOT_FOUND"
    error = await ledger.error(ledger.pay("ghost", "alice", "1"))
    assert error.code == "NOT_FOUND"
    missing = await ledger.error(ledger.stub.GetBalance(pb.GetBalanceRequest(agent_id="ghost")))
    assert missing.code == "NOT_FOUND"


async def test_insufficient_funds_changes_nothing_and_replays(ledger) -> None:
    error = await ledger.error(ledger.pay("alice", "bob", "100.01", request_id="big"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")
    assert error.precondition_violations[0].type == "INSUFFICIENT_FUNDS"
    assert error.metadata["replayed"] == "false"
    transfer_id = error.metadata["transfer_id"]
    assert (await ledger.balance("alice"), await ledger.balance("bob")) == ("100.00", "100.00")
    # Money arrives, but the retry of the same request still answers the same.
    await ledger.pay("carol", "alice", "50")
    retry = await ledger.error(ledger.pay("alice", "bob", "100.01", request_id="big"))
    assert (retry.code, retry.reason, retry.message) == (error.code, error.reason, error.message)
    assert retry.metadata == {"transfer_id": transfer_id, "replayed": "true"}
    assert await ledger.balance("alice") == "150.00"
    history = await ledger.stub.ListTransactions(pb.ListTransactionsRequest(agent_id="alice"))
    failed = next(t for t in history.transfers if t.id == transfer_id)
    assert (failed.status, failed.failure_reason) == (
        ledger_pb2.TRANSFER_STATUS_FAILED,
        "INSUFFICIENT_FUNDS",
    )
    assert not failed.HasField("from_balance_after")


async def test_whole_balance_can_be_spent(ledger) -> None:
    transfer = await ledger.pay("alice", "bob", "100")
    assert transfer.from_balance_after.amount == "0.00"
    error = await ledger.error(ledger.pay("alice", "bob", "0.01"))
    assert error.reason == "INSUFFICIENT_FUNDS"


async def test_replay_returns_the_original_without_moving_money_again(ledger) -> None:
    first = await ledger.pay("alice", "bob", "10", request_id="once", reason="r")
    second = await ledger.pay("alice", "bob", "10.00", request_id="once", reason="r")
    assert second.replayed and not first.replayed
    assert (second.id, second.create_time, second.from_balance_after) == (
        first.id,
        first.create_time,
        first.from_balance_after,
    )
    assert await ledger.balance("alice") == "90.00"


async def test_request_ids_are_scoped_per_payer(ledger) -> None:
    await ledger.pay("alice", "carol", "1", request_id="shared")
    other = await ledger.pay("bob", "carol", "2", request_id="shared")
    assert not other.replayed
    assert await ledger.balance("carol") == "103.00"


@pytest.mark.parametrize("change", [{"amount": "11"}, {"to_agent": "carol"}, {"reason": "other"}])
async def test_reused_request_id_with_other_parameters_already_exists(ledger, change) -> None:
    await ledger.pay("alice", "bob", "10", request_id="dup", reason="r")
    fields = {"to": "bob", "amount": "10", "reason": "r"}
    if "to_agent" in change:
        fields["to"] = change["to_agent"]
    fields.update({k: v for k, v in change.items() if k != "to_agent"})
    to, amount = fields.pop("to"), fields.pop("amount")
    error = await ledger.error(ledger.pay("alice", to, amount, request_id="dup", **fields))
    assert (error.code, error.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")
    assert await ledger.balance("alice") == "90.00"


async def test_conservation_and_metrics(ledger) -> None:
    await ledger.pay("alice", "bob", "10")
    await ledger.pay("bob", "carol", "0.01")
    await ledger.error(ledger.pay("carol", "alice", "999"))
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.total_supply == metrics.total_minted
    assert metrics.total_supply.amount == "500.00"
    assert (metrics.volume.amount, metrics.transaction_count) == ("10.01", 2)
    assert (metrics.wallet_count, metrics.failed_count, metrics.pending_count) == (5, 1, 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"reason": "x" * 1001}, "reason"),
        ({"request_id": "r" * 201}, "request_id"),
        ({"to": "not an id"}, "to_agent"),
        ({"to": ""}, "to_agent"),
    ],
)
async def test_other_invalid_fields(ledger, fields, field) -> None:
    to = fields.pop("to", "bob")
    error = await ledger.error(ledger.pay("alice", to, "1", **fields))
    assert (error.code, [v.field for v in error.field_violations]) == ("INVALID_ARGUMENT", [field])


async def test_conversation_id_too_long_is_invalid(ledger) -> None:
    request = pb.CreateTransferRequest(to_agent="bob", amount="1", request_id="long-conv")
    metadata = (*ledger.agent("alice"), ("p2e-conversation", "c" * 201))
    error = await ledger.error(ledger.stub.CreateTransfer(request, metadata=metadata))
    assert error.field_violations[0].field == "p2e-conversation"
