"""The outbox publisher against a bus double: order, at-least-once, nothing lost on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message
from sqlalchemy import select

from p2e_kit.channels import Caller
from p2e_kit.db import create_engine
from p2e_ledger_gateway import events
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.outbox import OutboxPublisher
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


async def test_failed_publish_keeps_the_row_and_retries_in_order(ledger: Ledger) -> None:
    first, second = await pay(ledger, 1), await pay(ledger, 2)
    publisher = OutboxPublisher(ledger.db, "nats://unused", batch_size=100)
    bus = FlakyBus(failures=1)
    publisher.bus = bus  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        await publisher.drain_once()
    pending = await rows(ledger)
    assert [r["published_time"] for r in pending] == [None] * 6
    assert (pending[0]["attempts"], pending[0]["last_error"]) == (1, "TimeoutError: nats: timeout")

    sent_with_the_failure = len(bus.sent)  # pipelined after it: JetStream drops their re-send
    assert sent_with_the_failure == 5
    assert await publisher.drain_once() is False
    ids = [msg_id for _, msg_id, _ in bus.sent[sent_with_the_failure:]]
    assert ids == [
        f"{first}:transfer_settled",
        f"{first}:transfer_settled:b",
        f"{first}:transfer_settled",
        f"{second}:transfer_settled",
        f"{second}:transfer_settled:b",
        f"{second}:transfer_settled",
    ]
    assert isinstance(bus.sent[-6][2], events_pb2.TransferSettled)
    assert all(r["published_time"] for r in await rows(ledger))


async def test_failure_mid_batch_marks_what_was_acked(ledger: Ledger) -> None:
    await pay(ledger, 1)
    publisher = OutboxPublisher(ledger.db, "nats://unused")

    class FailsThird(FlakyBus):
        async def publish_bytes(
            self, subject: str, body: bytes, message_type: str, msg_id: str
        ) -> None:
            if len(self.sent) == 2:
                raise ConnectionError("gone")
            await super().publish_bytes(subject, body, message_type, msg_id)

    publisher.bus = FailsThird(0)  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await publisher.drain_once()
    published = [r["published_time"] is not None for r in await rows(ledger)]
    assert published == [True, True, False]


async def test_full_batches_report_more_work(ledger: Ledger) -> None:
    await pay(ledger, 1)
    publisher = OutboxPublisher(ledger.db, "nats://unused", batch_size=2)
    publisher.bus = FlakyBus(0)  # type: ignore[assignment]
    assert await publisher.drain_once() is True
    assert await publisher.drain_once() is False
