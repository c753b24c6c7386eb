"""The outbox publisher: drains committed events to NATS JetStream, in order, at least once.

Rows are read in id order, which is commit order (store.outbox), after a cursor: every row
up to `ledger_outbox_cursor.published_through` went out. The cursor moves only past rows
whose every message was acked, and is saved at most every `cursor_save_seconds` (and when
the publisher goes idle or stops), so a busy publisher writes one small row a few times a
second instead of a mark on every row it sent. A failed publish (NATS down, no stream,
timeout) leaves the cursor before the row, counts the attempt on it, and the publisher backs
off (doubling, capped) and tries again; JetStream's duplicate window (Nats-Msg-Id) absorbs
what is sent again after a crash before a save. The service serves without NATS: this task
keeps trying in the background.

Commits wake the publisher, which then lingers a little (`linger_seconds`) so that the commits
of the next few milliseconds go out in the same batch: one read of the pending rows per
batch, not per commit. A batch is pipelined: every message is written to the one NATS
connection in row order, then the PubAcks are awaited together (awaiting each before sending
the next cost ~3x the CPU per message). JetStream stores them in the order they arrive. The
cursor moves to the last row before the first failure in row order; that row and every later
one are sent again in order (a later one that was stored the first time is then dropped as a
duplicate).
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
from p2e_ledger_gateway.store import now_us, outbox, outbox_cursor

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
    cursor_save_seconds: float = 0.2  # the cursor is saved at most this often while busy


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
        self.cursor_save_seconds = config.cursor_save_seconds
        self._last_prune = 0
        self._failing_since: int | None = None
        self._last_warning = 0
        self.bus: Bus | None = None
        self.published = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rows up to this id went out (None: not read from the database yet); `_saved` is
        # what the database has, written at `_saved_at` (loop time).
        self._after: int | None = None
        self._saved: int | None = None
        self._saved_at = 0.0

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
        try:  # what went out since the last save; if this fails, it goes out again later
            async with asyncio.timeout(2.0):
                await self.save_cursor()
        except Exception as exc:
            log.warning("outbox: could not save the cursor at stop (%s)", exc)
        if self.bus is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self.bus.close()
            except TimeoutError:
                await self.bus.nc.close()
            self.bus = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.retry_min
        while True:
            try:
                if self.bus is None:
                    self.bus = await self._connect()
                self._wake.clear()  # a commit from now on triggers another round
                while await self.drain_once():
                    pass
                if self._saved_at + self.cursor_save_seconds <= loop.time():
                    await self.save_cursor()
                await self._prune()
                if self._failing_since is not None:
                    log.info("outbox: publishing again")
                    self._failing_since = None
                delay = self.retry_min
                # Unsaved progress: back within the save interval to save it (idle or not).
                unsaved = self._after != self._saved
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(
                        self.cursor_save_seconds if unsaved else self.poll_seconds
                    ):
                        await self._wake.wait()
                        await asyncio.sleep(self.linger_seconds)  # let more commits join
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
        """Delete the published rows (before the saved cursor) created before `cutoff` (µs),
        `chunk` rows per transaction so that the transfer batches queued beside them never
        wait for all of them; how many."""
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
        if self._after is None:
            self._after = self._saved = await self.db.read(_read_cursor)
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
        if failed_at:
            self._after = rows[failed_at - 1].id
        self.published += failed_at
        if error is not None:
            failed, text = rows[failed_at].id, f"{type(error).__name__}: {error}"
            await self.save_cursor(failed=failed, error=text)
            raise error
        return len(rows) == self.batch_size

    async def save_cursor(self, *, failed: int | None = None, error: str = "") -> None:
        """Write the cursor if it moved (and count a failed attempt on row `failed`)."""
        after = self._after
        if failed is None and (after is None or after == self._saved):
            return
        await self.db.write(lambda conn: _save(conn, after, failed, error))
        self._saved, self._saved_at = after, asyncio.get_running_loop().time()

    async def _pending(self, conn: AsyncConnection) -> Sequence[Row[Any, Any, Any, Any, Any]]:
        params = {"after": self._after or 0, "limit": self.batch_size}
        return (await conn.execute(_PENDING, params)).all()


# Built once: a statement built per read cost its construction and its cache key every time.
_PENDING = (
    select(outbox.c.id, outbox.c.subject, outbox.c.msg_id, outbox.c.message_type, outbox.c.body)
    .where(outbox.c.id > bindparam("after"))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_CURSOR = select(outbox_cursor.c.published_through).where(outbox_cursor.c.id == 1)
_SAVE_CURSOR = (
    update(outbox_cursor)
    .where(
        outbox_cursor.c.id == 1,
        # Never back: another publisher on the same database may have gone further.
        outbox_cursor.c.published_through < bindparam("after"),
    )
    .values(published_through=bindparam("after"), update_time=bindparam("stamp"))
)
_MARK_FAILED = (
    update(outbox)
    .where(outbox.c.id == bindparam("row"))
    .values(attempts=outbox.c.attempts + 1, last_error=bindparam("error"))
)
# The row at the cursor stays: SQLite gives a new row the highest id + 1, which must stay
# above the cursor even when every row before it is deleted.
_PRUNE = delete(outbox).where(
    outbox.c.id.in_(
        select(outbox.c.id)
        .where(
            outbox.c.id < _CURSOR.scalar_subquery(),
            outbox.c.create_time < bindparam("cutoff"),
        )
        .order_by(outbox.c.id)
        .limit(bindparam("chunk"))
    )
)


async def _read_cursor(conn: AsyncConnection) -> int:
    return int((await conn.execute(_CURSOR)).scalar_one())


async def _save(conn: AsyncConnection, after: int | None, failed: int | None, error: str) -> None:
    """Move the cursor to `after`; count the failed attempt on the row that did not go out."""
    if after is not None:
        await conn.execute(_SAVE_CURSOR, {"after": after, "stamp": now_us()})
    if failed is not None:
        await conn.execute(_MARK_FAILED, {"row": failed, "error": error[:1000]})
