"""Transfer batches written by a process of their own (`python -m p2e_ledger_gateway.writer_process`).

The gateway's gRPC handlers and the transaction that decides a batch of transfers need about
the same CPU, and in one process they share one interpreter lock: the gateway could never use
more than one core. So by default (`transfer_writer: process`, the SQL backend on a database
other processes can open) the gateway hands each batch of `TransferBatcher` to a child
process that owns its own connection and runs `transfers.create_many` in one write
transaction, exactly as the gateway would; the outcomes come back. Everything else the
gateway writes (wallets, approvals, freezes) stays in the gateway: SQLite's lock (`BEGIN
IMMEDIATE`, busy timeout) and PostgreSQL's row locks order the two writers, and every
transaction reads the audit chain's head inside itself, so neither caches what the other
changes.

The child also runs the outbox publisher (`WriterConfig.outbox`), on its own event loop while
its writer thread writes the next batch: it is woken by each batch that wrote events, reads
the rows back in order, publishes them and saves its cursor in transactions of its own. So the
events of a batch go out from the process that committed them, and the gateway keeps its
interpreter for gRPC (a separate publisher process cost a third of a transfer's CPU in its
reads, wake-ups and reports). The gateway wakes it with a `WAKE` frame after its own writes
of events.

The pipe carries frames: a 4-byte big-endian length, then a pickle (both ends are this
package, started by the gateway with its own interpreter). The first frame to the child is
its `WriterConfig`; it answers `("ready", None)` once its database is open, then one answer
per batch: `("ok", outcomes)`, `("refused", P2EError)` (e.g. the database is unavailable:
every request of the batch gets it) or `("failed", text)` (an unexpected error: the batcher
writes the batch again one by one); a `WAKE` frame (`None`) gets no answer. Closing the
child's stdin stops it after the batch in hand.

If the child dies mid-batch, the batch's callers get UNAVAILABLE (their transfers may have
been recorded; a retry with the same request_id returns what was). A child that exits is
replaced a second later (twice as long after each start that failed or died young, up to
30 s), or by the next batch if that comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from p2e_kit.db import SqliteSynchronous
from p2e_kit.errors import DependencyUnavailable, P2EError
from p2e_kit.logs import configure_logging
from p2e_ledger_gateway import transfers
from p2e_ledger_gateway.batcher import Outcome
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.money_backend import SqlMoney
from p2e_ledger_gateway.outbox import OutboxPublisher, PublisherConfig
from p2e_ledger_gateway.records import TransferRecord

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
RESTART_DELAY_SECONDS = 1.0  # before starting a child again; doubles while starts fail ...
RESTART_DELAY_MAX_SECONDS = 30.0  # ... up to this
HEALTHY_SECONDS = 10.0  # a child that ran this long resets the delay
EXIT_GRACE_SECONDS = 2.0  # a child whose pipe closed has this long to exit before it is killed
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class WriterConfig:
    """What the child needs to write batches as the gateway would."""

    database_url: str
    retry_attempts: int
    currency: Currency
    log_level: str = "INFO"
    sqlite_synchronous: SqliteSynchronous = "normal"
    outbox: PublisherConfig | None = None  # publish the outbox from the child; None: not

    def open_database(self) -> Database:
        """The child's database, set up as the gateway's."""
        return Database.open(
            self.database_url,
            retry_attempts=self.retry_attempts,
            sqlite_synchronous=self.sqlite_synchronous,
        )


class WriterFailed(RuntimeError):
    """The child could not write a batch for a reason that is not the ledger's own error."""


def frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


WAKE = frame(None)  # new outbox rows from the gateway's own writes: publish them; no answer


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's value; IncompleteReadError at the end of the stream."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))


class WriterProcess:
    """The gateway's side: starts the child, sends it batches, restarts it when it died."""

    def __init__(self, config: WriterConfig) -> None:
        self.config = config
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self.starts = 0

    def start(self) -> None:
        """Start the child in the background (its imports take a few seconds; the first
        batch waits until its database is open), and again whenever it exits: its outbox
        publisher has rows to send even when no batch comes."""
        self._supervisor = asyncio.create_task(self._supervise(), name="ledger-transfer-writer")

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY_SECONDS
        while not self._closed:
            started = loop.time()
            async with self._lock:
                try:
                    process: asyncio.subprocess.Process | None = await self._ensure_started()
                except Exception as exc:  # the next batch tries again and reports it
                    log.warning("transfer writer: %s (next start in %.0fs)", exc, delay)
                    process = None
            if process is not None:
                await process.wait()
            delay = restart_delay(delay, process is not None, loop.time() - started)
            await asyncio.sleep(delay)

    def notify_outbox(self) -> None:
        """The gateway committed outbox rows itself (an approval, a rejection): wake the
        child's publisher. A child that is not running reads them when it starts."""
        process = self._process
        if process is not None and process.returncode is None and process.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                process.stdin.write(WAKE)  # a whole frame: never inside another one

    async def write(self, items: Sequence[transfers.Item]) -> list[Outcome]:
        """The outcomes of one batch, in order, written by the child in one transaction."""
        data = frame(list(items))
        async with self._lock:
            if self._closed:
                raise DependencyUnavailable(
                    "the ledger-gateway is stopping", reason="TRANSFER_WRITER_STOPPED"
                )
            process = await self._send(data)
            assert process.stdout is not None
            try:
                kind, value = await read_frame(process.stdout)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self._reap(process, exiting=True)
                raise DependencyUnavailable(
                    "the ledger's transfer writer stopped during the transfer, which may have "
                    "been recorded: retry with the same request_id",
                    reason="TRANSFER_WRITER_RESTARTED",
                ) from exc
            except BaseException:  # cancelled mid-frame: the pipe is out of step
                await self._reap(process)
                raise
        if kind == "ok":
            return list(value)
        if kind == "refused":
            raise value
        raise WriterFailed(str(value))

    async def stop(self) -> None:
        """Close the child's stdin (it finishes the batch in hand and exits); later batches
        are refused."""
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        async with self._lock:
            process, self._process = self._process, None
            if process is None or process.returncode is not None:
                return
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                    await process.wait()
            except TimeoutError:
                log.warning("transfer writer did not stop in %ss; killed", STOP_TIMEOUT_SECONDS)
                await self._reap(process)

    async def _send(self, data: bytes) -> asyncio.subprocess.Process:
        """Send a batch to a running child. A child found dead when sending cannot have read
        the batch: the batch goes to a new child (once)."""
        for attempt in (1, 2):
            process = await self._ensure_started()
            assert process.stdin is not None
            try:
                process.stdin.write(data)
                await process.stdin.drain()
                return process
            except ConnectionError:
                await self._reap(process, exiting=True)
                if attempt == 2:
                    raise DependencyUnavailable(
                        "the ledger's transfer writer keeps exiting (see the gateway's log)",
                        reason="TRANSFER_WRITER_UNAVAILABLE",
                    ) from None
            except BaseException:
                await self._reap(process)
                raise
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        if process is not None:
            log.warning("transfer writer exited (code %s); starting a new one", process.returncode)
        self._process = None
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "p2e_ledger_gateway.writer_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(frame(self.config))
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await process.stdin.drain()
                kind, value = await read_frame(process.stdout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            await self._reap(process, exiting=not isinstance(exc, TimeoutError))
            raise DependencyUnavailable(
                "the ledger's transfer writer did not start (see the gateway's log)",
                reason="TRANSFER_WRITER_UNAVAILABLE",
            ) from exc
        except BaseException:  # cancelled (the gateway stops): no child left behind
            await self._reap(process)
            raise
        if kind != "ready":
            await self._reap(process)
            raise value if isinstance(value, P2EError) else WriterFailed(str(value))
        self._process = process
        self.starts += 1
        return process

    async def _reap(self, process: asyncio.subprocess.Process, *, exiting: bool = False) -> None:
        """Forget `process`; kill it unless it has exited, and wait for it. One whose pipe
        closed (`exiting`) is first given `EXIT_GRACE_SECONDS` to exit and be reaped by
        asyncio's child watcher: `kill()` polls the child, and a poll that reaps a dead child
        before the watcher does leaves asyncio reporting exit code 255 ("Unknown child
        process") instead of the real one."""
        if self._process is process:
            self._process = None
        if exiting and process.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXIT_GRACE_SECONDS):
                    await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def restart_delay(last: float, started: bool, ran_seconds: float) -> float:
    """How long to wait before starting the child again: the first delay again after a
    child that ran well, else twice the last one (a database that cannot be opened, a child
    that keeps dying at once), capped."""
    if started and ran_seconds >= HEALTHY_SECONDS:
        return RESTART_DELAY_SECONDS
    return min(last * 2, RESTART_DELAY_MAX_SECONDS)


# --- the child ------------------------------------------------------------------------------


async def _child(stdin: asyncio.StreamReader, out: BinaryIO) -> None:
    def send(kind: str, value: object) -> None:
        out.write(frame((kind, value)))
        out.flush()

    config: WriterConfig = await read_frame(stdin)
    configure_logging(config.log_level, "ledger-transfer-writer")
    db = config.open_database()
    money = SqlMoney(db, config.currency)
    currency = config.currency
    publisher = OutboxPublisher(db, config.outbox) if config.outbox is not None else None
    gc.freeze()  # start-up's objects live as long as the child (see p2e_kit.service)
    try:
        if publisher is not None:
            publisher.start()
        send("ready", None)
        while True:
            try:
                items = await read_frame(stdin)
            except asyncio.IncompleteReadError:  # stdin closed: the gateway stops us
                return
            if items is None:  # WAKE
                if publisher is not None:
                    publisher.notify()
                continue
            try:
                outcomes = await db.write(
                    lambda conn, items=items: transfers.create_many(conn, money, items, currency)
                )
            except P2EError as exc:
                send("refused", exc)
            except Exception as exc:
                log.warning("a batch of %d transfers failed: %s", len(items), exc)
                send("failed", f"{type(exc).__name__}: {exc}")
            else:
                send("ok", outcomes)
                if publisher is not None and any(_new_event(o) for o in outcomes):
                    publisher.notify()
    finally:
        if publisher is not None:
            await publisher.stop()
        await db.close()


def _new_event(outcome: Outcome) -> bool:
    """The outcome wrote an event to the outbox (a replay or a refused request did not)."""
    return isinstance(outcome, TransferRecord) and not outcome.replayed


async def _child_main() -> None:
    # The frames get the pipe to themselves: anything else printed goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(BrokenPipeError), out:  # BrokenPipeError: the gateway is gone
        await _child(reader, out)


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_child_main())


if __name__ == "__main__":
    main()
