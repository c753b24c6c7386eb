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

The transaction stores one outbox row per event (`outbox_row`): the event's messages, built
from the record in the writer and packed into the row's body (`pack`), so that the publisher
only unpacks and sends them (`messages`). Storing the record as JSON instead and building the
messages in the publisher cost 47-77 µs of CPU per settled event, against 25-29 µs this way
(both sides together, one machine): the JSON round trip and the record built again from it
were the difference. Rows of an earlier version are still read: an event row holding the
record as JSON (`EVENT_ROW`) is expanded as it was then, and a row holding one ready message
(any other `message_type`) is sent as it is.
"""

from __future__ import annotations

import functools
import json
import struct
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


EventMessage = (
    events_pb2.TransferSettled
    | events_pb2.TransferFailed
    | events_pb2.TransferPending
    | events_pb2.TransferApproved
    | events_pb2.TransferRejected
)


def _event_message(event: str, record: TransferRecord, currency: Currency, by: str) -> EventMessage:
    message: EventMessage
    if event == SETTLED:
        message = events_pb2.TransferSettled()
    elif event == FAILED:
        message = events_pb2.TransferFailed()
    elif event == PENDING:
        message = events_pb2.TransferPending()
    elif event == APPROVED:
        message = events_pb2.TransferApproved(approved_by=by)
    elif event == REJECTED:
        message = events_pb2.TransferRejected(rejected_by=by)
    else:
        raise ValueError(f"unknown ledger event {event!r}")
    convert.fill_transfer(message.transfer, record, currency)
    return message


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
    message = artifacts_pb2.Artifact(
        id=msg_id(record.id, event),
        kind=event,
        conversation_id=record.conversation_id or SYSTEM_CONVERSATION,
        agent_id=record.from_agent,
        produced_by=PRODUCER,
        causation_id=record.request_id,
        content_type="application/json",
        payload=payload,
        size_bytes=len(payload),
    )
    convert.set_timestamp(message.create_time, now)
    return message


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
MESSAGES_ROW = "p2e.ledger.outbox.Messages"  # an outbox row's message_type: its body is `pack`ed
EVENT_ROW = "p2e.ledger.outbox.Event"  # rows of an earlier version: the record as JSON


def outbox_row(
    event: str, record: TransferRecord, currency: Currency, now: int, *, by: str = ""
) -> dict[str, Any]:
    """The one outbox row of `event`: its messages (`event_messages`), packed."""
    sends = event_messages(event, record, currency, now, by=by)
    return {
        "subject": sends[0][0],
        "msg_id": sends[0][3],
        "message_type": MESSAGES_ROW,
        "body": pack(sends),
        "create_time": now,
    }


_LENGTHS = struct.Struct(">HHHI")  # subject, msg_id, message_type (UTF-8), body: their lengths


def pack(sends: list[Outgoing]) -> bytes:
    """Messages as one outbox body: per message its four lengths (`_LENGTHS`), then subject,
    msg id and message type in UTF-8 and the body's bytes."""
    parts = []
    for subject, body, message_type, message_id in sends:
        texts = [subject.encode(), message_id.encode(), message_type.encode()]
        parts.append(_LENGTHS.pack(*map(len, texts), len(body)))
        parts += texts
        parts.append(body)
    return b"".join(parts)


def unpack(data: bytes) -> list[Outgoing]:
    """The messages `pack` stored, in order; ValueError when `data` is not such a body."""
    sends = []
    at, end, size = 0, len(data), _LENGTHS.size
    try:
        while at < end:
            subject_n, id_n, type_n, body_n = _LENGTHS.unpack_from(data, at)
            at += size
            subject = data[at : at + subject_n].decode()
            at += subject_n
            message_id = data[at : at + id_n].decode()
            at += id_n
            message_type = data[at : at + type_n].decode()
            at += type_n
            sends.append((subject, data[at : at + body_n], message_type, message_id))
            at += body_n
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a packed outbox body: {exc}") from None
    if at != end:
        raise ValueError("not a packed outbox body: truncated")
    return sends


def messages(subject: str, body: bytes, message_type: str, message_id: str) -> list[Outgoing]:
    """What an outbox row publishes, as (subject, body, message_type, msg_id): the messages
    packed in it, those of an earlier version's event row, or a stored message as it is."""
    if message_type == MESSAGES_ROW:
        return unpack(body)
    if message_type != EVENT_ROW:
        return [(subject, body, message_type, message_id)]
    data = _JSON.decode(body.decode())
    record = TransferRecord.from_row(data["record"])
    currency = _currency(data["asset"], data["scale"])
    return event_messages(data["event"], record, currency, data["time"], by=data["by"])


_JSON = json.JSONDecoder()


@functools.lru_cache(maxsize=8)
def _currency(asset: str, scale: int) -> Currency:
    return Currency(asset=asset, scale=scale)


def decode(message_type: str, body: bytes) -> Message:
    """An outbox row's message (for tests and tools; the publisher sends the stored bytes)."""
    message = MESSAGE_TYPES[message_type]()
    message.ParseFromString(body)
    return message
