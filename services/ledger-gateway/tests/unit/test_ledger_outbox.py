"""The outbox publisher against a bus double: order, at-least-once, nothing lost on failure.

Each settled transfer stores one outbox row, which goes out as three messages (the payer's
and the payee's transfer_settled, and an artifact); a row counts as published only when all
its messages were acked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message
from sqlalchemy import insert, select

from p2e_kit.channels import Caller
from p2e_kit.db import create_engine
from p2e_ledger_gateway import events
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.outbox import OutboxPublisher, PublisherConfig
from p2e_ledger_gateway.store import create_schema, outbox
from p2engine.ledger.v1 import events_pb2

OPERATOR = Caller("operator", "ops")


class FlakyBus:
    """A Bus that refuses the first `failures` publishes, then acks (like JetStream)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str, Message]] = []

    async def publish_batch(
        self, messages: list[tuple[str, bytes, str, str]]
    ) -> list[object | BaseException]:
        outcomes: list[object | BaseException] = []
        for subject, body, message_type, msg_id in messages:
            try:
                await self.publish_bytes(subject, body, message_type, msg_id)
                outcomes.append(object())
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def publish_bytes(
        self, subject: str, body: bytes, message_type: str, msg_id: str
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("nats: timeout")
        self.sent.append((subject, msg_id, events.decode(message_type, body)))


@pytest.fixture
async def ledger(sqlite_url: str) -> AsyncIterator[Ledger]:
    db = Database(create_engine(sqlite_url))
    await create_schema(db.engine)
    ledger = Ledger(db, LedgerOptions())
    await ledger.init_wallets(OPERATOR, ["a", "b"], "10", "")
    yield ledger
    await db.close()


async def pay(ledger: Ledger, n: int) -> str:
    record = await ledger.create_transfer(
        Caller("agent", "a"), from_agent="", to_agent="b", amount="1", reason="", request_id=f"r{n}"
    )
    return record.id


async def rows(ledger: Ledger) -> list:
    query = select(outbox).order_by(outbox.c.id)
    return list((await ledger.db.read(lambda conn: conn.execute(query))).mappings().all())


def settled_ids(transfer_id: str) -> list[str]:
    """The Nats-Msg-Ids of a settled transfer's row, in the order they are sent."""
    event = f"{transfer_id}:transfer_settled"
    return [event, f"{event}:b", event]


class FailsAt(FlakyBus):
    """A Bus that refuses the publishes at `positions` (counting every publish from 0)."""

    def __init__(self, *positions: int) -> None:
        super().__init__(0)
        self.positions = set(positions)
        self.calls = 0

    async def publish_bytes(
        self, subject: str, body: bytes, message_type: str, msg_id: str
    ) -> None:
        position, self.calls = self.calls, self.calls + 1
        if position in self.positions:
            raise ConnectionError("gone")
        await super().publish_bytes(subject, body, message_type, msg_id)


async def test_failed_publish_keeps_the_row_and_retries_in_order(ledger: Ledger) -> None:
    first, second = await pay(ledger, 1), await pay(ledger, 2)
    publisher = OutboxPublisher(ledger.db, PublisherConfig("nats://unused", batch_size=100))
    bus = FlakyBus(failures=1)  # the first row's first message
    publisher.bus = bus  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        await publisher.drain_once()
    pending = await rows(ledger)
    assert [r["published_time"] for r in pending] == [None] * 2  # one row per transfer
    assert (pending[0]["attempts"], pending[0]["last_error"]) == (1, "TimeoutError: nats: timeout")
    assert (pending[1]["attempts"], pending[1]["last_error"]) == (0, "")
    assert publisher.published == 0

    sent_with_the_failure = len(bus.sent)  # pipelined after it: JetStream drops their re-send
    assert sent_with_the_failure == 5
    assert await publisher.drain_once() is False
    ids = [msg_id for _, msg_id, _ in bus.sent[sent_with_the_failure:]]
    assert ids == settled_ids(first) + settled_ids(second)
    assert isinstance(bus.sent[-6][2], events_pb2.TransferSettled)
    assert all(r["published_time"] for r in await rows(ledger))
    assert publisher.published == 2


@pytest.mark.parametrize("position", range(9))
async def test_failure_mid_batch_marks_the_rows_before_the_failed_one(
    ledger: Ledger, position: int
) -> None:
    """Any message of a row failing keeps that row and the later ones pending, even when all
    the later rows' messages were acked; the earlier rows are marked."""
    ids = [await pay(ledger, n) for n in range(3)]  # 3 rows, 9 messages
    publisher = OutboxPublisher(ledger.db, PublisherConfig("nats://unused"))
    bus = FailsAt(position)
    publisher.bus = bus  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await publisher.drain_once()
    failed = position // 3  # the row of the refused message
    after = await rows(ledger)
    assert [r["published_time"] is not None for r in after] == [n < failed for n in range(3)]
    assert [r["attempts"] for r in after] == [int(n == failed) for n in range(3)]
    assert after[failed]["last_error"] == "ConnectionError: gone"
    every = [i for t in ids for i in settled_ids(t)]
    assert [msg_id for _, msg_id, _ in bus.sent] == every[:position] + every[position + 1 :]

    sent_before = len(bus.sent)  # the retry starts again at the failed row, in order
    assert await publisher.drain_once() is False
    assert [msg_id for _, msg_id, _ in bus.sent[sent_before:]] == every[3 * failed :]
    assert all(r["published_time"] for r in await rows(ledger))


async def test_a_stored_message_row_goes_out_as_it_is(ledger: Ledger) -> None:
    """A row of an earlier version (one message per row) is one message, failing on its own."""
    first = await pay(ledger, 1)
    old = events_pb2.TransferFailed()
    old.transfer.id = "old"
    stored = {
        "subject": "p2e.ledger.transfer_failed.a",
        "msg_id": "old:transfer_failed",
        "message_type": old.DESCRIPTOR.full_name,
        "body": old.SerializeToString(),
        "create_time": 1,
    }
    await ledger.db.write(lambda conn: conn.execute(insert(outbox).values(**stored)))
    second = await pay(ledger, 2)
    publisher = OutboxPublisher(ledger.db, PublisherConfig("nats://unused"))
    bus = FailsAt(3)  # the stored message, right after the first row's three
    publisher.bus = bus  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await publisher.drain_once()
    after = await rows(ledger)
    assert [r["published_time"] is not None for r in after] == [True, False, False]
    assert [r["attempts"] for r in after] == [0, 1, 0]

    sent_before = len(bus.sent)
    assert await publisher.drain_once() is False
    resent = bus.sent[sent_before:]
    assert [msg_id for _, msg_id, _ in resent] == ["old:transfer_failed", *settled_ids(second)]
    assert resent[0] == ("p2e.ledger.transfer_failed.a", "old:transfer_failed", old)
    assert [msg_id for _, msg_id, _ in bus.sent[:3]] == settled_ids(first)
    assert all(r["published_time"] for r in await rows(ledger))


async def test_full_batches_report_more_work(ledger: Ledger) -> None:
    for n in range(3):
        await pay(ledger, n)
    publisher = OutboxPublisher(
        ledger.db, PublisherConfig("nats://unused", batch_size=2)
    )  # rows, not messages
    bus = FlakyBus(0)
    publisher.bus = bus  # type: ignore[assignment]
    assert await publisher.drain_once() is True
    assert (publisher.published, len(bus.sent)) == (2, 6)
    assert await publisher.drain_once() is False
    assert (publisher.published, len(bus.sent)) == (3, 9)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_prune_deletes_old_published_rows_in_chunks_and_keeps_the_rest(
    any_url: str,
) -> None:
    db = Database(create_engine(any_url))
    try:
        await create_schema(db.engine)
        # 7 rows published at 100..106, 2 published at 1000, 2 pending: prune before 500.
        stamps = [100 + n for n in range(7)] + [1000, 1000, None, None]
        values = [
            {
                "subject": "p2e.ledger.test",
                "msg_id": f"m{n}",
                "message_type": "test",
                "body": b"",
                "create_time": 1,
                "published_time": stamp,
            }
            for n, stamp in enumerate(stamps)
        ]
        await db.write(lambda conn: conn.execute(insert(outbox), values))
        publisher = OutboxPublisher(db, PublisherConfig("nats://unused"))
        assert await publisher.prune(500, chunk=3) == 7  # in 3 transactions: 3, 3, 1
        query = select(outbox.c.msg_id, outbox.c.published_time).order_by(outbox.c.id)
        left = (await db.read(lambda conn: conn.execute(query))).all()
        assert [tuple(row) for row in left] == [
            ("m7", 1000),
            ("m8", 1000),
            ("m9", None),
            ("m10", None),
        ]
        assert await publisher.prune(500, chunk=3) == 0
    finally:
        await db.close()
