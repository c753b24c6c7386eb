"""What the ledger publishes: ledger.v1 events and artifacts.v1.Artifact, via the outbox.

Each transfer outcome becomes outbox rows in the transaction that records it:

- `transfer_settled`: TransferSettled on ledger_subject(event, payer) with
  Nats-Msg-Id `<transfer_id>:transfer_settled`, and on ledger_subject(event, payee) with
  `<transfer_id>:transfer_settled:<payee>` (one stream, so the payee copy needs its own id);
- `transfer_failed` / `transfer_pending` / `transfer_approved` / `transfer_rejected`: one
  message on the payer's subject, msg id `<transfer_id>:<event>`;
- for every event, one Artifact (kind = event, conversation from `p2e-conversation` metadata
  or "system", produced_by "ledger-gateway", JSON payload) on artifact_subject(conversation,
  kind), msg id = artifact id = `<transfer_id>:<event>`.

The publisher (outbox.py) sends them later; this module only builds them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from p2e_kit.bus import artifact_subject, ledger_subject
from p2e_ledger_gateway import convert
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import TransferRecord
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.ledger.v1 import events_pb2

PRODUCER = "ledger-gateway"
SYSTEM_CONVERSATION = "system"

SETTLED = "transfer_settled"
FAILED = "transfer_failed"
PENDING = "transfer_pending"
APPROVED = "transfer_approved"
REJECTED = "transfer_rejected"

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.TransferSettled,
        events_pb2.TransferFailed,
        events_pb2.TransferPending,
        events_pb2.TransferApproved,
        events_pb2.TransferRejected,
        artifacts_pb2.Artifact,
    )
}


def msg_id(transfer_id: str, event: str) -> str:
    return f"{transfer_id}:{event}"


def _event_message(event: str, record: TransferRecord, currency: Currency, by: str) -> Message:
    transfer = convert.transfer(record, currency)
    if event == SETTLED:
        return events_pb2.TransferSettled(transfer=transfer)
    if event == FAILED:
        return events_pb2.TransferFailed(transfer=transfer)
    if event == PENDING:
        return events_pb2.TransferPending(transfer=transfer)
    if event == APPROVED:
        return events_pb2.TransferApproved(transfer=transfer, approved_by=by)
    if event == REJECTED:
        return events_pb2.TransferRejected(transfer=transfer, rejected_by=by)
    raise ValueError(f"unknown ledger event {event!r}")


def artifact(event: str, record: TransferRecord, message: Message, now: int) -> Message:
    payload = json_format.MessageToJson(message, indent=None).encode()
    return artifacts_pb2.Artifact(
        id=msg_id(record.id, event),
        kind=event,
        conversation_id=record.conversation_id or SYSTEM_CONVERSATION,
        agent_id=record.from_agent,
        produced_by=PRODUCER,
        causation_id=record.request_id,
        create_time=convert.timestamp(now),
        content_type="application/json",
        payload=payload,
        size_bytes=len(payload),
    )


def outbox_rows(
    event: str, record: TransferRecord, currency: Currency, now: int, *, by: str = ""
) -> list[dict[str, Any]]:
    """The outbox rows (subject, msg_id, message_type, body) announcing `event`."""
    message = _event_message(event, record, currency, by)
    sends: list[tuple[str, str, Message]] = [
        (ledger_subject(event, record.from_agent), msg_id(record.id, event), message)
    ]
    if event == SETTLED:
        payee_id = f"{msg_id(record.id, event)}:{record.to_agent}"
        sends.append((ledger_subject(event, record.to_agent), payee_id, message))
    art = artifact(event, record, message, now)
    conversation = record.conversation_id or SYSTEM_CONVERSATION
    sends.append((artifact_subject(conversation, event), msg_id(record.id, event), art))
    return [
        {
            "subject": subject,
            "msg_id": ident,
            "message_type": body.DESCRIPTOR.full_name,
            "body": body.SerializeToString(),
            "create_time": now,
        }
        for subject, ident, body in sends
    ]


def decode(message_type: str, body: bytes) -> Message:
    """The outbox row's message, ready for Bus.publish."""
    message = MESSAGE_TYPES[message_type]()
    message.ParseFromString(body)
    return message
