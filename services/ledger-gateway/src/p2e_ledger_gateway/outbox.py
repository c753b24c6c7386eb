"""The outbox publisher: drains committed events to NATS JetStream, in order, at least once.

A row is marked published only after its PubAck. A failed publish (NATS down, no stream,
timeout) leaves the row pending; the publisher backs off (doubling, capped) and tries again,
and JetStream's duplicate window (Nats-Msg-Id) absorbs a re-send after a crash between the
ack and the mark. The service serves without NATS: this task keeps trying in the background.

Commits wake the publisher, which then lingers a little (`linger_seconds`) so that the commits
of the next few milliseconds go out in the same batch: one read of the pending rows and one
write marking them published per batch, not per commit. A batch is pipelined: every message
is written to the one NATS connection in row order, then the PubAcks are awaited together
(awaiting each before sending the next cost ~3x the CPU per message). JetStream stores them
in the order they arrive. Rows up to the first failure in row order are marked; that row
and every later one stay pending and are sent again in order (a later one that was stored
the first time is then dropped as a duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Row, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.bus import ARTIFACTS, LEDGER, Bus, connect
from p2e_kit.errors import DependencyUnavailable
from p2e_ledger_gateway import events
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.store import now_us, outbox

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
PRUNE_EVERY_US = 60 * 1_000_000
PRUNE_CHUNK = 2000  # rows per pruning transaction
WARN_EVERY_US = 60 * 1_000_000


@dataclass(frozen=True)
class PublisherConfig:
    """Where the publisher sends and how it batches, polls, backs off and prunes."""

    nats_url: str
    batch_size: int = 200  # rows per batch
    poll_seconds: float = 1.0  # a read of the pending rows at least this often
    linger_seconds: float = 0.02  # after a wake-up, for more commits to join the batch
    retry_min_seconds: float = 0.2  # the backoff after a failure doubles from min to max
    retry_max_seconds: float = 10.0
    retention_hours: float = 24.0  # published rows are deleted after this long


class OutboxPublisher:
    """One background task per process: connect, drain in order, wait for a commit or a poll."""

    def __init__(self, db: Database, config: PublisherConfig) -> None:
        self.db = db
        self.nats_url = config.nats_url
        self.batch_size = config.batch_size
        self.poll_seconds = config.poll_seconds
        self.linger_seconds = config.linger_seconds
        self.retry_min = config.retry_min_seconds
        self.retry_max = config.retry_max_seconds
        self.retention_hours = config.retention_hours
        self._last_prune = 0
        self._failing_since: int | None = None
        self._last_warning = 0
        self.bus: Bus | None = None
        self.published = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rows up to this id went out in this run: the next batches read after it (the marks
        # may still be on their way); every poll reads from the start again (stragglers).
        self._after: int | None = None

    def notify(self) -> None:
        """A write committed new rows: publish them now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-outbox-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.bus is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self.bus.close()
            except TimeoutError:
                await self.bus.nc.close()
            self.bus = None

    async def _run(self) -> None:
        delay = self.retry_min
        while True:
            try:
                if self.bus is None:
                    self.bus = await self._connect()
                self._wake.clear()  # a commit from now on triggers another round
                while await self.drain_once():
                    pass
                await self._prune()
                if self._failing_since is not None:
                    log.info("outbox: publishing again")
                    self._failing_since = None
                delay = self.retry_min
                try:
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wake.wait()
                        await asyncio.sleep(self.linger_seconds)  # let more commits join
                except TimeoutError:
                    self._after = None  # a poll: read every pending row again
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: keep the rows, back off, try again
                self._report(exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    def _report(self, exc: Exception, delay: float) -> None:
        """A warning when publishing starts failing and once a minute after; debug otherwise."""
        now = now_us()
        if self._failing_since is None or now - self._last_warning >= WARN_EVERY_US:
            self._failing_since = self._failing_since or now
            self._last_warning = now
            self._after = None
            log.warning("outbox: cannot publish yet (%s); retrying with backoff", exc)
        else:
            log.debug("outbox: still failing (%s); retrying in %.1fs", exc, delay)

    async def _prune(self) -> None:
        """Forget rows published longer ago than the retention, at most once a minute."""
        now = now_us()
        if now - self._last_prune < PRUNE_EVERY_US:
            return
        self._last_prune = now
        await self.prune(now - int(self.retention_hours * 3600 * 1_000_000))

    async def prune(self, cutoff: int, chunk: int = PRUNE_CHUNK) -> int:
        """Delete the rows published before `cutoff` (µs), `chunk` rows per transaction so
        that the transfer batches queued beside them never wait for all of them; how many."""
        deleted = 0
        while True:
            done = await self.db.write(
                lambda conn: conn.execute(_PRUNE, {"cutoff": cutoff, "chunk": chunk})
            )
            deleted += done.rowcount
            if done.rowcount < chunk:
                return deleted

    async def _connect(self) -> Bus:
        # Look first: a refused TCP connect is cheap, and nats-py logs every failed attempt.
        parsed = urlparse(self.nats_url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                _reader, writer = await asyncio.open_connection(host, port)
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise DependencyUnavailable(f"nats-server at {self.nats_url} is down ({exc})") from exc
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            bus = await connect(self.nats_url, "ledger-gateway")
        try:
            await bus.ensure_streams((LEDGER, ARTIFACTS))
        except Exception:
            await bus.close()
            raise
        log.info("outbox: connected to %s", self.nats_url)
        return bus

    async def drain_once(self) -> bool:
        """Publish one batch of pending rows in order; True when a full batch went out."""
        assert self.bus is not None
        bus = self.bus
        rows = await self.db.read(self._pending)
        expanded = [events.messages(r.subject, r.body, r.message_type, r.msg_id) for r in rows]
        batch = [message for row_messages in expanded for message in row_messages]
        outcomes = await bus.publish_batch(batch) if batch else []
        # A row went out when all its messages did; the first row that did not stops the batch.
        failed_at, error, n = len(rows), None, 0
        for index, row_messages in enumerate(expanded):
            row_outcomes = outcomes[n : n + len(row_messages)]
            n += len(row_messages)
            error = next((o for o in row_outcomes if isinstance(o, BaseException)), None)
            if error is not None:
                failed_at = index
                break
        acked = [row.id for row in rows[:failed_at]]
        if acked:
            self._after = acked[-1]
        self.published += len(acked)
        if error is not None:
            failed, text = rows[failed_at].id, f"{type(error).__name__}: {error}"
            await self.db.write(lambda conn: _mark(conn, acked, failed, text))
            raise error
        if acked:
            await self.db.write(lambda conn: _mark(conn, acked, None, ""))
        return len(rows) == self.batch_size

    async def _pending(self, conn: AsyncConnection) -> Sequence[Row[Any, Any, Any, Any, Any]]:
        params = {"after": self._after or 0, "limit": self.batch_size}
        return (await conn.execute(_PENDING, params)).all()


# Built once: a statement built per read cost its construction and its cache key every time.
_PENDING = (
    select(outbox.c.id, outbox.c.subject, outbox.c.msg_id, outbox.c.message_type, outbox.c.body)
    .where(outbox.c.published_time.is_(None), outbox.c.id > bindparam("after"))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_MARK_PUBLISHED = (
    update(outbox)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_time=bindparam("stamp"))
)
_MARK_FAILED = (
    update(outbox)
    .where(outbox.c.id == bindparam("row"))
    .values(attempts=outbox.c.attempts + 1, last_error=bindparam("error"))
)
MARK_CHUNK = 500  # ids per UPDATE
_PRUNE = delete(outbox).where(
    outbox.c.id.in_(
        select(outbox.c.id)
        .where(outbox.c.published_time < bindparam("cutoff"))
        .order_by(outbox.c.id)
        .limit(bindparam("chunk"))
    )
)


async def _mark(conn: AsyncConnection, acked: list[int], failed: int | None, error: str) -> None:
    """Mark acked rows published; count the failed attempt on the row that did not go out."""
    stamp = now_us()
    for start in range(0, len(acked), MARK_CHUNK):
        ids = acked[start : start + MARK_CHUNK]
        await conn.execute(_MARK_PUBLISHED, {"ids": ids, "stamp": stamp})
    if failed is not None:
        await conn.execute(_MARK_FAILED, {"row": failed, "error": error[:1000]})
