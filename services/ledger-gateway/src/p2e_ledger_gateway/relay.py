"""The outbox publisher in a process of its own (`python -m p2e_ledger_gateway.relay`).

Publishing costs the gateway's one interpreter lock as much CPU as a third of a transfer
(reading the rows back, the NATS writes and PubAcks), so by default the gateway runs its
`OutboxPublisher` in a child process, which it starts, restarts if it dies, and stops with
itself. The child only reads the database; what went out comes back as one JSON line per
batch on its stdout, and the gateway writes those marks in its own transactions (one writer
per SQLite file; on PostgreSQL the same). The gateway wakes the child with a byte on its
stdin after every commit that wrote outbox rows; the child also polls. Closing its stdin
stops it. Nothing is lost if the child dies at any point: rows stay pending until a mark
for them is committed, and a re-sent message is dropped by JetStream's duplicate window.

`outbox_relay: inline` (or a database only this process can open) keeps the publisher on the
gateway's own event loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from typing import Any

from p2e_kit.db import create_engine, is_sqlite
from p2e_kit.logs import configure_logging
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.outbox import DatabaseMarks, OutboxPublisher

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0
REPORT_IDS = 1000  # row ids per report line
REPORT_LIMIT = 1 << 20  # bytes per report line the gateway reads
MARK_INTERVAL_SECONDS = 0.1  # the gateway writes the reports gathered in this time together
STOP_TIMEOUT_SECONDS = 3.0


def publisher(db: Database, settings: Settings, **kwargs: Any) -> OutboxPublisher:
    """The outbox publisher as `settings` configure it."""
    return OutboxPublisher(
        db,
        settings.nats_url,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        linger_seconds=settings.outbox_linger_seconds,
        retry_min_seconds=settings.outbox_retry_min_seconds,
        retry_max_seconds=settings.outbox_retry_max_seconds,
        retention_hours=settings.outbox_retention_hours,
        **kwargs,
    )


class RelayProcess:
    """The gateway's side: the child process, its wake-ups and the marks it reports."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._marks = DatabaseMarks(db)
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="ledger-outbox-relay")

    def notify(self) -> None:
        """New outbox rows committed: wake the child."""
        process = self._process
        if process is not None and process.stdin is not None and process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                process.stdin.write(b".")

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "p2e_ledger_gateway.relay",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=self._child_env(),
                    limit=REPORT_LIMIT,
                )
                await self._apply_reports(self._process)
                code = await self._process.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the marks could not be written: restart the child
                log.warning("outbox relay: %s", exc)
                if self._process is not None and self._process.returncode is None:
                    self._process.kill()
                    await self._process.wait()
                code = self._process.returncode if self._process else None
            if self._stopping:
                return
            self.restarts += 1
            log.warning("outbox relay exited (code %s); restarting", code)
            await asyncio.sleep(RESTART_DELAY_SECONDS)

    async def _apply_reports(self, process: asyncio.subprocess.Process) -> None:
        """Write the child's reports, gathered for up to MARK_INTERVAL_SECONDS: a mark is a
        write transaction, and each would queue beside the transfers for the one writer."""
        assert process.stdout is not None
        pending = _Reports()
        flusher = asyncio.create_task(self._flush_every(pending))
        try:
            async for line in process.stdout:
                pending.add(json.loads(line))
                if len(pending.acked) >= REPORT_IDS * 10:
                    await self._flush(pending)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._flush(pending)

    async def _flush_every(self, pending: _Reports) -> None:
        while True:
            await asyncio.sleep(MARK_INTERVAL_SECONDS)
            await self._flush(pending)

    async def _flush(self, pending: _Reports) -> None:
        acked, failures, prune = pending.take()
        if acked:
            await self._marks.mark(acked, None, "")
        for failed, error in failures:
            await self._marks.mark([], failed, error)
        if prune is not None:
            await self._marks.prune(prune)

    def _child_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env |= {
            "P2E_LEDGER_DATABASE_URL": s.db_url,
            "P2E_NATS_URL": s.nats_url,
            "P2E_LOG_LEVEL": s.log_level,
            "P2E_LEDGER_OUTBOX_BATCH_SIZE": str(s.outbox_batch_size),
            "P2E_LEDGER_OUTBOX_POLL_SECONDS": str(s.outbox_poll_seconds),
            "P2E_LEDGER_OUTBOX_LINGER_SECONDS": str(s.outbox_linger_seconds),
            "P2E_LEDGER_OUTBOX_RETRY_MIN_SECONDS": str(s.outbox_retry_min_seconds),
            "P2E_LEDGER_OUTBOX_RETRY_MAX_SECONDS": str(s.outbox_retry_max_seconds),
            "P2E_LEDGER_OUTBOX_RETENTION_HOURS": str(s.outbox_retention_hours),
        }
        return env


class _Reports:
    """The child's reports not yet written: acked ids, failed attempts, the latest prune."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.failures: list[tuple[int, str]] = []
        self.prune: int | None = None

    def add(self, report: dict[str, Any]) -> None:
        if "prune" in report:
            self.prune = max(self.prune or 0, int(report["prune"]))
            return
        self.acked += report["acked"]
        if report["failed"] is not None:
            self.failures.append((int(report["failed"]), str(report["error"])))

    def take(self) -> tuple[list[int], list[tuple[int, str]], int | None]:
        taken = (self.acked, self.failures, self.prune)
        self.acked, self.failures, self.prune = [], [], None
        return taken


class PipeMarks:
    """The child's side of the marks: one JSON line each on stdout, for the gateway."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout

    async def mark(self, acked: list[int], failed: int | None, error: str) -> None:
        # Lines of at most REPORT_IDS ids (the gateway reads lines up to REPORT_LIMIT bytes).
        for start in range(0, max(len(acked), 1), REPORT_IDS):
            chunk = acked[start : start + REPORT_IDS]
            last = start + REPORT_IDS >= len(acked)
            self._send({"acked": chunk, "failed": failed if last else None, "error": error})

    async def prune(self, cutoff: int) -> None:
        self._send({"prune": cutoff})

    def _send(self, report: dict[str, Any]) -> None:
        self.out.write(json.dumps(report, separators=(",", ":")) + "\n")
        self.out.flush()


async def _child() -> None:
    settings = Settings()
    configure_logging(settings.log_level, "ledger-outbox-relay")
    # Reads only: SQLite's reader thread (a WAL snapshot beside the gateway's writer), or the
    # async engine on PostgreSQL; no writer of its own (the gateway writes the marks).
    db = Database(
        create_engine(settings.db_url), threads=is_sqlite(settings.db_url), read_only=True
    )
    relay = publisher(db, settings, marks=PipeMarks())
    relay.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.read(4096):  # a wake-up; EOF: the gateway stops us
            relay.notify()
    finally:
        await relay.stop()
        await db.close()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_child())


if __name__ == "__main__":
    main()
