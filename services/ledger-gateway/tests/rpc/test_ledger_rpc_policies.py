"""Policies (config.json ledger.policies) and the approval flow over a real socket."""

from __future__ import annotations

import pytest

from p2e_kit.channels import caller_metadata
from p2engine.ledger.v1 import ledger_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb

# conftest: kid {max_per_transfer 50, daily_cap 120, allowed [alice, bob]}; boss {approval 200}


@pytest.mark.parametrize(
    ("to", "amount", "reason"),
    [("carol", "1", "RECIPIENT_NOT_ALLOWED"), ("alice", "50.01", "LIMIT_EXCEEDED")],
)
async def test_limit_breach_is_recorded_and_replayed(ledger, to, amount, reason) -> None:
    error = await ledger.error(ledger.pay("kid", to, amount, request_id="k1"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", reason)
    assert error.precondition_violations[0].type == reason
    again = await ledger.error(ledger.pay("kid", to, amount, request_id="k1"))
    assert (again.reason, again.metadata["replayed"]) == (reason, "true")
    assert await ledger.balance("kid") == "100.00"


async def test_daily_cap_counts_settled_debits(ledger) -> None:
    await ledger.init("kid", balance="0")  # kid exists with 100.00: untouched
    await ledger.pay("alice", "kid", "100")
    await ledger.pay("kid", "alice", "50")
    await ledger.pay("kid", "bob", "50")
    await ledger.error(ledger.pay("kid", "bob", "25"))  # refusals do not count
    await ledger.pay("kid", "bob", "20")  # 120 in 24h: exactly the cap
    error = await ledger.error(ledger.pay("kid", "bob", "0.01"))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "DAILY_CAP_EXCEEDED")
    assert await ledger.balance("kid") == "80.00"


async def pending(ledger, amount: str = "250", request_id: str = "p1") -> str:
    error = await ledger.error(ledger.pay("boss", "alice", amount, request_id=request_id))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "APPROVAL_REQUIRED")
    assert error.metadata["approval_id"] == error.metadata["transfer_id"]
    return error.metadata["approval_id"]


async def test_above_threshold_waits_for_approval_then_settles(ledger) -> None:
    await ledger.pay("alice", "boss", "100")
    await ledger.pay("carol", "boss", "100")
    approval_id = await pending(ledger)
    assert await ledger.balance("boss") == "300.00"
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.pending_count == 1
    retry = await ledger.error(ledger.pay("boss", "alice", "250", request_id="p1"))
    assert (retry.reason, retry.metadata["replayed"]) == ("APPROVAL_REQUIRED", "true")

    request = pb.ApproveTransferRequest(transfer_id=approval_id, request_id="ap1")
    approved = await ledger.stub.ApproveTransfer(request, metadata=ledger.operator)
    assert approved.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    assert approved.from_balance_after.amount == "50.00"
    assert (await ledger.balance("boss"), await ledger.balance("alice")) == ("50.00", "250.00")
    replay = await ledger.stub.ApproveTransfer(request, metadata=ledger.operator)
    assert replay.replayed and replay.id == approved.id
    assert await ledger.balance("boss") == "50.00"
    other = pb.ApproveTransferRequest(transfer_id=approval_id, request_id="ap2")
    error = await ledger.error(ledger.stub.ApproveTransfer(other, metadata=ledger.operator))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "NOT_PENDING")
    settled = await ledger.pay("boss", "alice", "250", request_id="p1")  # the payer's retry
    assert settled.replayed and settled.status == ledger_pb2.TRANSFER_STATUS_SETTLED
    audit = await ledger.stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=2))
    assert [e.event_type for e in audit.events] == ["transfer_settled", "transfer_approved"]
    assert {e.actor for e in audit.events} == {"operator:ops"}


async def test_approval_rechecks_funds(ledger) -> None:
    await ledger.pay("alice", "boss", "100")
    await ledger.pay("carol", "boss", "50")
    approval_id = await pending(ledger)
    await ledger.pay("boss", "carol", "100")
    request = pb.ApproveTransferRequest(transfer_id=approval_id)
    error = await ledger.error(ledger.stub.ApproveTransfer(request, metadata=ledger.operator))
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")
    assert await ledger.balance("boss") == "150.00"
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.pending_count == 1  # still waiting: an operator may reject it


async def test_reject_marks_rejected_and_moves_nothing(ledger) -> None:
    await ledger.pay("alice", "boss", "100")
    await ledger.pay("carol", "boss", "50")
    approval_id = await pending(ledger)
    request = pb.RejectTransferRequest(transfer_id=approval_id, reason="too much", request_id="rj")
    rejected = await ledger.stub.RejectTransfer(request, metadata=ledger.operator)
    assert rejected.status == ledger_pb2.TRANSFER_STATUS_REJECTED
    assert (await ledger.stub.RejectTransfer(request, metadata=ledger.operator)).replayed
    assert await ledger.balance("boss") == "250.00"
    retry = await ledger.error(ledger.pay("boss", "alice", "250", request_id="p1"))
    assert (retry.code, retry.reason) == ("FAILED_PRECONDITION", "TRANSFER_REJECTED")
    approve = pb.ApproveTransferRequest(transfer_id=approval_id)
    error = await ledger.error(ledger.stub.ApproveTransfer(approve, metadata=ledger.operator))
    assert error.reason == "NOT_PENDING"


@pytest.mark.parametrize("method", ["ApproveTransfer", "RejectTransfer"])
async def test_decision_errors(ledger, method) -> None:
    await ledger.pay("alice", "boss", "100")
    await ledger.pay("carol", "boss", "50")
    approval_id = await pending(ledger, "200.01")
    rpc = getattr(ledger.stub, method)
    make = getattr(pb, f"{method}Request")
    for metadata in (ledger.agent("boss"), ()):
        denied = await ledger.error(rpc(make(transfer_id=approval_id), metadata=metadata))
        assert denied.code == "PERMISSION_DENIED"
    missing = await ledger.error(rpc(make(transfer_id="tr_nope"), metadata=ledger.operator))
    assert missing.code == "NOT_FOUND"
    settled = await ledger.pay("carol", "bob", "1")
    not_pending = await ledger.error(rpc(make(transfer_id=settled.id), metadata=ledger.operator))
    assert (not_pending.code, not_pending.reason) == ("FAILED_PRECONDITION", "NOT_PENDING")
    service = caller_metadata("service", "console")
    done = await rpc(make(transfer_id=approval_id), metadata=service)
    assert done.status != ledger_pb2.TRANSFER_STATUS_PENDING_APPROVAL
