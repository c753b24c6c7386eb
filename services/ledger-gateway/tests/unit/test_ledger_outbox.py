"""The outbox publisher against a bus double: order, at-least-once, nothing lost on failure.

Each settled transfer stores one outbox row, which goes out as three messages (the payer's
and the payee's transfer_settled, and an artifact); the cursor passes a row only when all
its messages were acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message
from sqlalchemy import delete, insert, select, text, update

from p2e_kit.channels import Caller
from p2e_kit.db import create_engine
from p2e_ledger_gateway import events
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.outbox import OutboxPublisher, PublisherConfig
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.store import create_schema, outbox, outbox_cursor
from p2e_ledger_gateway.transfers import log_events
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


async def cursor(db: Database) -> int:
    """The saved cursor: every row up to this id went out."""
    query = select(outbox_cursor.c.published_through)
    return int((await db.read(lambda conn: conn.execute(query))).scalar_one())


async def published(ledger: Ledger) -> list[bool]:
    """For each row in order, whether the saved cursor has passed it."""
    through = await cursor(ledger.db)
    return [row["id"] <= through for row in await rows(ledger)]


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
    assert await published(ledger) == [False] * 2  # one row per transfer
    assert (pending[0]["attempts"], pending[0]["last_error"]) == (1, "TimeoutError: nats: timeout")
    assert (pending[1]["attempts"], pending[1]["last_error"]) == (0, "")
    assert publisher.published == 0

    sent_with_the_failure = len(bus.sent)  # pipelined after it: JetStream drops their re-send
    assert sent_with_the_failure == 5
    assert await publisher.drain_once() is False
    ids = [msg_id for _, msg_id, _ in bus.sent[sent_with_the_failure:]]
    assert ids == settled_ids(first) + settled_ids(second)
    assert isinstance(bus.sent[-6][2], events_pb2.TransferSettled)
    assert await published(ledger) == [False] * 2  # went out; saved by the run loop, or:
    await publisher.save_cursor()
    assert await published(ledger) == [True] * 2
    assert publisher.published == 2


@pytest.mark.parametrize("position", range(9))
async def test_failure_mid_batch_saves_the_cursor_before_the_failed_row(
    ledger: Ledger, position: int
) -> None:
    """Any message of a row failing keeps that row and the later ones pending, even when all
    the later rows' messages were acked; the cursor is saved past the earlier rows."""
    ids = [await pay(ledger, n) for n in range(3)]  # 3 rows, 9 messages
    publisher = OutboxPublisher(ledger.db, PublisherConfig("nats://unused"))
    bus = FailsAt(position)
    publisher.bus = bus  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await publisher.drain_once()
    failed = position // 3  # the row of the refused message
    after = await rows(ledger)
    assert await published(ledger) == [n < failed for n in range(3)]
    assert [r["attempts"] for r in after] == [int(n == failed) for n in range(3)]
    assert after[failed]["last_error"] == "ConnectionError: gone"
    every = [i for t in ids for i in settled_ids(t)]
    assert [msg_id for _, msg_id, _ in bus.sent] == every[:position] + every[position + 1 :]

    sent_before = len(bus.sent)  # the retry starts again at the failed row, in order
    assert await publisher.drain_once() is False
    assert [msg_id for _, msg_id, _ in bus.sent[sent_before:]] == every[3 * failed :]
    await publisher.save_cursor()
    assert await published(ledger) == [True] * 3


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
    assert await published(ledger) == [True, False, False]
    assert [r["attempts"] for r in after] == [0, 1, 0]

    sent_before = len(bus.sent)
    assert await publisher.drain_once() is False
    resent = bus.sent[sent_before:]
    assert [msg_id for _, msg_id, _ in resent] == ["old:transfer_failed", *settled_ids(second)]
    assert resent[0] == ("p2e.ledger.transfer_failed.a", "old:transfer_failed", old)
    assert [msg_id for _, msg_id, _ in bus.sent[:3]] == settled_ids(first)
    await publisher.save_cursor()
    assert await published(ledger) == [True] * 3


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
        # 11 rows: 7 created at 100..106, 2 at 1000, 2 at 100 again; the cursor after 9.
        created = [100 + n for n in range(7)] + [1000, 1000, 100, 100]
        values = [
            {
                "subject": "p2e.ledger.test",
                "msg_id": f"m{n}",
                "message_type": "test",
                "body": b"",
                "create_time": stamp,
            }
            for n, stamp in enumerate(created)
        ]
        await db.write(lambda conn: conn.execute(insert(outbox), values))
        ids = (await db.read(lambda conn: conn.execute(select(outbox.c.id)))).scalars().all()
        first = min(ids)  # PostgreSQL's sequence may not start at 1 in a used database

        async def set_cursor(through: int) -> None:
            move = update(outbox_cursor).values(published_through=through)
            await db.write(lambda conn: conn.execute(move))

        async def left() -> list[str]:
            query = select(outbox.c.msg_id).order_by(outbox.c.id)
            return list((await db.read(lambda conn: conn.execute(query))).scalars().all())

        await set_cursor(first + 8)  # m0..m8 went out
        publisher = OutboxPublisher(db, PublisherConfig("nats://unused"))
        assert await publisher.prune(500, chunk=3) == 7  # in 3 transactions: 3, 3, 1
        assert await left() == ["m7", "m8", "m9", "m10"]  # too young, or not published
        assert await publisher.prune(500, chunk=3) == 0

        await set_cursor(first + 10)  # all went out: the row at the cursor stays
        assert await publisher.prune(500, chunk=3) == 1
        assert await left() == ["m7", "m8", "m10"]
    finally:
        await db.close()


async def test_the_first_cursor_follows_an_earlier_versions_marks(sqlite_url: str) -> None:
    """A database of a version that marked each row: publishing resumes at its first
    unpublished row (or after the last row), and that version's index goes."""
    db = Database(create_engine(sqlite_url))
    try:
        await create_schema(db.engine)
        marks = [5, 6, None, 7, None]  # a straggler after the first unpublished row
        values = [
            {
                "subject": "p2e.ledger.test",
                "msg_id": f"m{n}",
                "message_type": "test",
                "body": b"",
                "create_time": 1,
                "published_time": mark,
            }
            for n, mark in enumerate(marks)
        ]

        async def as_earlier_version(conn) -> None:
            await conn.execute(insert(outbox), values)
            await conn.execute(delete(outbox_cursor))
            await conn.execute(
                text("CREATE INDEX ix_ledger_outbox_pending ON ledger_outbox (published_time, id)")
            )

        await db.write(as_earlier_version)
        await create_schema(db.engine)
        assert await cursor(db) == 2  # rows 3..5 go out (again)
        indexes = text("SELECT name FROM sqlite_master WHERE type = 'index'")
        names = (await db.read(lambda conn: conn.execute(indexes))).scalars().all()
        assert "ix_ledger_outbox_pending" not in names

        everything = update(outbox).values(published_time=9)
        await db.write(lambda conn: conn.execute(everything))
        await db.write(lambda conn: conn.execute(delete(outbox_cursor)))
        await create_schema(db.engine)
        assert await cursor(db) == 5
    finally:
        await db.close()


@pytest.mark.postgres
async def test_outbox_ids_are_given_in_commit_order_on_postgresql(postgres_url: str) -> None:
    """The cursor needs a row never to become visible after a row with a higher id: a
    transaction takes the audit head's lock before it draws its outbox ids, so a second one
    draws none until the first has committed."""
    engine = create_engine(postgres_url)
    await create_schema(engine)

    def logged(transfer_id: str) -> list:
        record = TransferRecord(
            transfer_id, "r1", "a", "b", 100, "", Status.SETTLED, "", "", "agent:a", "", 1, 1, 0
        )
        return [(events.SETTLED, record, "agent:a", {})]

    sequence = text("SELECT last_value, is_called FROM ledger_outbox_id_seq")
    try:
        async with engine.connect() as first, engine.connect() as second, engine.connect() as look:
            await first.begin()
            await log_events(first, logged("tr_1"), Currency())
            drawn = (await look.execute(sequence)).one()
            await second.begin()
            other = asyncio.create_task(log_events(second, logged("tr_2"), Currency()))
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            for _ in range(500):  # 10 s at most
                if (await look.execute(waiting)).scalar_one():
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the second transaction never waited for the audit head's lock")
            assert not other.done()
            assert (await look.execute(sequence)).one() == drawn  # the second drew no id
            await first.commit()
            await other
            await second.commit()
        async with engine.connect() as conn:
            query = select(outbox.c.msg_id).order_by(outbox.c.id)
            in_id_order = list((await conn.execute(query)).scalars())
        assert in_id_order == ["tr_1:transfer_settled", "tr_2:transfer_settled"]
    finally:
        await engine.dispose()
