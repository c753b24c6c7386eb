"""The events the ledger publishes: the artifact's JSON payload is the event's proto3 JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from google.protobuf import json_format

from p2e_ledger_gateway import events
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import Status, TransferRecord
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.ledger.v1 import events_pb2

CURRENCY = Currency()
BASE = TransferRecord(
    id="tr_1",
    request_id="req-1",
    from_agent="agent_alpha",
    to_agent="agent_beta",
    amount=2500,
    reason="for the report — merci",
    status=Status.SETTLED,
    failure_reason="",
    failure_detail="",
    initiated_by="agent:agent_alpha",
    conversation_id="c1",
    create_time=1_764_000_000_123_456,
    settle_time=1_764_000_000_123_456,
    from_balance_after=7500,
)
RECORDS = [
    BASE,
    replace(BASE, create_time=1_764_000_000_000_000, reason=""),
    replace(BASE, create_time=1_764_000_000_120_000, from_balance_after=0),
    replace(
        BASE,
        status=Status.FAILED,
        failure_reason="INSUFFICIENT_FUNDS",
        from_balance_after=None,
        conversation_id="",
    ),
    replace(BASE, status=Status.PENDING_APPROVAL, from_balance_after=None, request_id=""),
    replace(BASE, status=Status.REJECTED, from_balance_after=None, replayed=True),
]
EVENTS = [events.SETTLED, events.FAILED, events.PENDING, events.APPROVED, events.REJECTED]


@pytest.mark.parametrize("record", RECORDS, ids=range(len(RECORDS)))
@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("by", ["", "operator:ops"])
def test_event_json_is_the_messages_proto3_json(
    record: TransferRecord, event: str, by: str
) -> None:
    message = events._event_message(event, record, CURRENCY, by)
    expected = json_format.MessageToJson(message, indent=None)
    built = events.event_json(event, record, CURRENCY, by)
    assert json.loads(built) == json.loads(expected)
    assert list(json.loads(built)["transfer"]) == list(json.loads(expected)["transfer"])
    parsed = type(message)()
    json_format.Parse(built, parsed)
    assert parsed == message


def test_the_messages_of_a_settled_transfer() -> None:
    sent = events.event_messages(events.SETTLED, BASE, CURRENCY, BASE.create_time)
    assert [(subject, ident) for subject, _, _, ident in sent] == [
        ("p2e.ledger.transfer_settled.agent_alpha", "tr_1:transfer_settled"),
        ("p2e.ledger.transfer_settled.agent_beta", "tr_1:transfer_settled:agent_beta"),
        ("p2e.artifacts.c1.transfer_settled", "tr_1:transfer_settled"),
    ]
    settled = events.decode(sent[0][2], sent[0][1])
    assert isinstance(settled, events_pb2.TransferSettled)
    assert settled.transfer.from_balance_after.amount == "75.00"
    art = events.decode(sent[2][2], sent[2][1])
    assert isinstance(art, artifacts_pb2.Artifact)
    assert art.size_bytes == len(art.payload)
    again = events_pb2.TransferSettled()
    json_format.Parse(art.payload, again)
    assert again == settled


@pytest.mark.parametrize("record", RECORDS, ids=range(len(RECORDS)))
@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("by", ["", "operator:ops"])
def test_an_event_row_expands_into_the_events_messages(
    record: TransferRecord, event: str, by: str
) -> None:
    """`messages` of the one row `outbox_row` stores are the messages `event_messages` builds."""
    record = replace(record, replayed=False)  # the events logged are of new records only
    now = 1_764_000_001_000_000
    row = events.outbox_row(event, record, CURRENCY, now, by=by)
    assert (row["message_type"], row["create_time"]) == (events.MESSAGES_ROW, now)
    assert (row["subject"], row["msg_id"]) == (f"p2e.ledger.{event}.agent_alpha", f"tr_1:{event}")
    expanded = events.messages(row["subject"], row["body"], row["message_type"], row["msg_id"])
    assert expanded == events.event_messages(event, record, CURRENCY, now, by=by)
    # settled: the payer's and the payee's event, and the artifact; otherwise the payer's, and
    # the artifact
    assert len(expanded) == (3 if event == events.SETTLED else 2)
    decoded = [events.decode(message_type, body) for _, body, message_type, _ in expanded]
    assert decoded[0].transfer.id == "tr_1"  # type: ignore[attr-defined]
    assert isinstance(decoded[-1], artifacts_pb2.Artifact)
    assert decoded[-1].create_time.ToMicroseconds() == now


@pytest.mark.parametrize("event", EVENTS)
def test_an_earlier_versions_event_row_expands_as_it_did(event: str) -> None:
    """A row written before the messages were packed at commit (the record as JSON, expanded
    by the publisher) still publishes the same messages."""
    record, now, by = replace(RECORDS[0], replayed=False), 1_764_000_001_000_000, "operator:ops"
    body = {
        "event": event,
        "record": record.row(),
        "by": by,
        "time": now,
        "asset": CURRENCY.asset,
        "scale": CURRENCY.scale,
    }
    stored = json.dumps(body, separators=(",", ":")).encode()
    subject, message_id = f"p2e.ledger.{event}.agent_alpha", f"tr_1:{event}"
    expanded = events.messages(subject, stored, events.EVENT_ROW, message_id)
    assert expanded == events.event_messages(event, record, CURRENCY, now, by=by)


@pytest.mark.parametrize("cut", [1, 9, 20, -1])
def test_a_packed_body_cut_short_is_refused(cut: int) -> None:
    packed = events.outbox_row(events.SETTLED, RECORDS[0], CURRENCY, 1)["body"]
    with pytest.raises(ValueError, match="not a packed outbox body"):
        events.unpack(packed[:cut])
    assert events.unpack(b"") == []


def test_a_stored_message_row_is_returned_as_it_is() -> None:
    (row, *_) = events.event_messages(events.FAILED, RECORDS[3], CURRENCY, 1)
    assert events.messages(*row) == [row]
    other = ("p2e.ledger.other.a", b"\x00not json", "some.Other", "x:other")
    assert events.messages(*other) == [other]
