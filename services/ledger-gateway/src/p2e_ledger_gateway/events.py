"""What the ledger publishes: ledger.v1 events and artifacts.v1.Artifact, via the outbox.

Each transfer outcome is announced by these messages:

- `transfer_settled`: TransferSettled on ledger_subject(event, payer) with
  Nats-Msg-Id `<transfer_id>:transfer_settled`, and on ledger_subject(event, payee) with
  `<transfer_id>:transfer_settled:<payee>` (one stream, so the payee copy needs its own id);
- `transfer_failed` / `transfer_pending` / `transfer_approved` / `transfer_rejected`: one
  message on the payer's subject, msg id `<transfer_id>:<event>`;
- for every event, one Artifact (kind = event, conversation from `p2e-conversation` metadata
  or "system", produced_by "ledger-gateway", JSON payload) on artifact_subject(conversation,
  kind), msg id = artifact id = `<transfer_id>:<event>`.

The transaction stores one outbox row per event (`outbox_row`: the record and what the
messages need, as JSON), and the publisher expands it into those messages when it sends them
(`messages`, `event_messages`), in its own process: building three protobuf messages and a
JSON payload per event cost the writer as much as the rest of a transfer. Rows holding a
ready message (any other `message_type`, e.g. written by an earlier version) are sent as
they are.
"""

from __future__ import annotations

import functools
import json
from json.encoder import encode_basestring as _q
from typing import Any

from google.protobuf.message import Message

from p2e_kit.bus import artifact_subject, ledger_subject
from p2e_ledger_gateway import convert, rfc3339
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import Status, TransferRecord
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.ledger.v1 import events_pb2, ledger_pb2

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


def event_json(event: str, record: TransferRecord, currency: Currency, by: str) -> str:
    """The proto3 JSON of the event message (as `json_format.MessageToJson(message,
    indent=None)` gives it, fields in number order, defaults left out), written straight from
    the record with json's string encoder: the generic printer cost more than the rest of a
    transfer's events, and a dict for `json.dumps` ~3.5 times what this does."""
    asset = _q(currency.asset)
    parts = [f'{{"transfer": {{"id": {_q(record.id)}']
    if record.request_id:
        parts.append(f', "requestId": {_q(record.request_id)}')
    parts.append(f', "fromAgent": {_q(record.from_agent)}, "toAgent": {_q(record.to_agent)}')
    parts.append(f', "amount": {{"amount": "{currency.format(record.amount)}", "asset": {asset}}}')
    if record.reason:
        parts.append(f', "reason": {_q(record.reason)}')
    parts.append(f', "status": "{_STATUS_JSON[record.status]}"')
    if record.failure_reason:
        parts.append(f', "failureReason": {_q(record.failure_reason)}')
    if record.initiated_by:
        parts.append(f', "initiatedBy": {_q(record.initiated_by)}')
    parts.append(f', "createTime": "{_timestamp_json(record.create_time)}"')
    if record.replayed:
        parts.append(', "replayed": true')
    if record.status is Status.SETTLED and record.from_balance_after is not None:
        after = currency.format(record.from_balance_after)
        parts.append(f', "fromBalanceAfter": {{"amount": "{after}", "asset": {asset}}}')
    parts.append("}")
    if by and event in (APPROVED, REJECTED):
        parts.append(f', "{"approvedBy" if event == APPROVED else "rejectedBy"}": {_q(by)}')
    parts.append("}")
    return "".join(parts)


_STATUS_JSON = {
    status: ledger_pb2.TransferStatus.Name(value) for status, value in convert.STATUS.items()
}


def _timestamp_json(micros: int) -> str:
    """RFC 3339 as protobuf's JSON mapping writes it: 0, 3 or 6 fraction digits."""
    seconds, micro = divmod(micros, 1_000_000)
    text = rfc3339.seconds_text(seconds)
    if micro == 0:
        return text + "Z"
    if micro % 1000 == 0:
        return f"{text}.{micro // 1000:03d}Z"
    return f"{text}.{micro:06d}Z"


def artifact(event: str, record: TransferRecord, payload_json: str, now: int) -> Message:
    payload = payload_json.encode()
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


Outgoing = tuple[str, bytes, str, str]  # subject, body, message_type, msg_id


def event_messages(
    event: str, record: TransferRecord, currency: Currency, now: int, *, by: str = ""
) -> list[Outgoing]:
    """The messages announcing `event`, as (subject, body, message_type, msg_id)."""
    message = _event_message(event, record, currency, by)
    body = message.SerializeToString()  # the payer's and the payee's copy are the same bytes
    art = artifact(event, record, event_json(event, record, currency, by), now)
    ident = msg_id(record.id, event)
    message_type = message.DESCRIPTOR.full_name
    sends = [(ledger_subject(event, record.from_agent), body, message_type, ident)]
    if event == SETTLED:
        payee_id = f"{ident}:{record.to_agent}"
        sends.append((ledger_subject(event, record.to_agent), body, message_type, payee_id))
    conversation = record.conversation_id or SYSTEM_CONVERSATION
    sends.append(
        (artifact_subject(conversation, event), art.SerializeToString(), ARTIFACT_TYPE, ident)
    )
    return sends


ARTIFACT_TYPE = artifacts_pb2.Artifact.DESCRIPTOR.full_name
EVENT_ROW = "p2e.ledger.outbox.Event"  # the message_type of an outbox row standing for an event


def outbox_row(
    event: str, record: TransferRecord, currency: Currency, now: int, *, by: str = ""
) -> dict[str, Any]:
    """The one outbox row of `event`, expanded into its messages by `messages`."""
    body = {
        "event": event,
        "record": record.row(),
        "by": by,
        "time": now,
        "asset": currency.asset,
        "scale": currency.scale,
    }
    return {
        "subject": ledger_subject(event, record.from_agent),
        "msg_id": msg_id(record.id, event),
        "message_type": EVENT_ROW,
        "body": _COMPACT.encode(body).encode(),
        "create_time": now,
    }


def messages(subject: str, body: bytes, message_type: str, message_id: str) -> list[Outgoing]:
    """What an outbox row publishes, as (subject, body, message_type, msg_id): an event row's
    messages (`event_messages`), or a stored message as it is."""
    if message_type != EVENT_ROW:
        return [(subject, body, message_type, message_id)]
    data = _JSON.decode(body.decode())
    record = TransferRecord.from_row(data["record"])
    currency = _currency(data["asset"], data["scale"])
    return event_messages(data["event"], record, currency, data["time"], by=data["by"])


_JSON = json.JSONDecoder()
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@functools.lru_cache(maxsize=8)
def _currency(asset: str, scale: int) -> Currency:
    return Currency(asset=asset, scale=scale)


def decode(message_type: str, body: bytes) -> Message:
    """An outbox row's message (for tests and tools; the publisher sends the stored bytes)."""
    message = MESSAGE_TYPES[message_type]()
    message.ParseFromString(body)
    return message
