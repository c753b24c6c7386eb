"""Ledger records to protobuf messages (used by the API and by the events)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from p2e_ledger_gateway.audit import AuditEntry
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import Status, TransferRecord, WalletRecord
from p2engine.common.v1 import common_pb2
from p2engine.ledger.v1 import ledger_pb2

STATUS = {
    Status.SETTLED: ledger_pb2.TRANSFER_STATUS_SETTLED,
    Status.FAILED: ledger_pb2.TRANSFER_STATUS_FAILED,
    Status.PENDING_APPROVAL: ledger_pb2.TRANSFER_STATUS_PENDING_APPROVAL,
    Status.REJECTED: ledger_pb2.TRANSFER_STATUS_REJECTED,
}


def timestamp(micros: int) -> Timestamp:
    """`Timestamp.FromMicroseconds(micros)`, set through the constructor."""
    seconds, micro = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micro * 1000)


def money(minor: int, currency: Currency) -> common_pb2.Money:
    return common_pb2.Money(amount=currency.format(minor), asset=currency.asset)


def wallet(record: WalletRecord, currency: Currency) -> ledger_pb2.Wallet:
    message = ledger_pb2.Wallet(
        agent_id=record.agent_id,
        balance=money(record.balance, currency),
        frozen=record.frozen,
        sent_count=record.sent_count,
        received_count=record.received_count,
        create_time=timestamp(record.create_time),
    )
    if record.last_activity_time is not None:
        set_timestamp(message.last_activity_time, record.last_activity_time)
    return message


def transfer(record: TransferRecord, currency: Currency) -> ledger_pb2.Transfer:
    message = ledger_pb2.Transfer()
    fill_transfer(message, record, currency)
    return message


def fill_transfer(message: ledger_pb2.Transfer, record: TransferRecord, currency: Currency) -> None:
    """Set `message` (a new Transfer, or one inside another message) from `record`.

    Fields and sub-messages are set in place: a message built apart and handed to a parent's
    constructor is copied into it, and a Money / Timestamp built apart is copied too (~2x
    slower). Empty strings and false are proto3's defaults, so they are not set."""
    message.id = record.id
    message.request_id = record.request_id
    message.from_agent = record.from_agent
    message.to_agent = record.to_agent
    if record.reason:
        message.reason = record.reason
    message.status = STATUS[record.status]
    if record.failure_reason:
        message.failure_reason = record.failure_reason
    if record.initiated_by:
        message.initiated_by = record.initiated_by
    if record.replayed:
        message.replayed = True
    amount = message.amount
    amount.amount = currency.format(record.amount)
    amount.asset = currency.asset
    set_timestamp(message.create_time, record.create_time)
    if record.status is Status.SETTLED and record.from_balance_after is not None:
        after = message.from_balance_after
        after.amount = currency.format(record.from_balance_after)
        after.asset = currency.asset


def set_timestamp(message: Timestamp, micros: int) -> None:
    """`message.FromMicroseconds(micros)`, for a Timestamp inside another message."""
    message.seconds, micro = divmod(micros, 1_000_000)
    message.nanos = micro * 1000


def audit_event(entry: AuditEntry) -> ledger_pb2.AuditEvent:
    return ledger_pb2.AuditEvent(
        sequence=entry.sequence,
        event_type=entry.event_type,
        actor=entry.actor,
        agent_id=entry.agent_id,
        transfer_id=entry.transfer_id,
        payload_json=entry.payload_json,
        create_time=timestamp(entry.create_time),
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )
