"""SQLite's WAL checkpoints on a thread of their own, off the writer's path.

In WAL mode every commit appends the pages it changed to the `-wal` file, and a checkpoint
copies them back into the database file (and fsyncs it). SQLite's automatic checkpoint runs
inside the COMMIT of whichever transaction crosses 1,000 pages: under a steady transfer load
one batch in eight waited for a checkpoint, 11-17 ms instead of ~5 (the random writes into
the database file and two fsyncs), and every request of that batch waited with it.

So a `WalCheckpointer` turns the automatic checkpoint off on the ledger's writer connection
(`take_over`) and does the copying on its own connection and thread, at most every
`INTERVAL_SECONDS` after commits (`committed`), with `PRAGMA wal_checkpoint(PASSIVE)`: it
never blocks the writer, and sqlite3 releases the interpreter lock while it copies, so it
runs beside the writer on another core.
If its thread cannot open the file, the writer's connection gets SQLite's own back.

A passive checkpoint cannot start the WAL file over while the writer keeps appending: the log
restarts only when a write transaction begins with every frame copied. Once the log holds
`reset_frames` frames the thread checkpoints after every commit, and when one such checkpoint
has copied the whole log, quickly (few frames: the writer appended little meanwhile), the
writer's thread, between two transactions, copies the frames of its last commits itself (in
`committed`; a few ms, mostly two fsyncs), so that its next transaction starts the log
again (if no reader still reads from it; otherwise it tries again later, as SQLite's
own checkpoint would have to).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

# After a commit, copy what the commits of this long wrote, together: a page the commits
# change again and again (a wallet, an index leaf) is copied once per checkpoint, so a longer
# interval copies less (at 64 spread clients: ~40 µs of CPU per transfer at 0.05 s, ~16 at
# 0.5 s, ~13 at 1 s); the WAL holds at most this long of commits more.
INTERVAL_SECONDS = 0.5
HURRY_SECONDS = 0.002  # ... or of this long, while the log is due to start over
RESET_FRAMES = 16_000  # start the log over once it holds this many frames (64 MB at 4 KiB)
SHORT_PASS_FRAMES = 400  # a checkpoint that copied no more than this was quick: little left
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
SQLITE_AUTOCHECKPOINT = 1000  # SQLite's default, restored if the thread fails


class WalCheckpointer:
    """A daemon thread checkpointing the WAL of the SQLite file at `path` for one writer."""

    def __init__(
        self,
        path: str,
        *,
        name: str,
        interval_seconds: float = INTERVAL_SECONDS,
        reset_frames: int = RESET_FRAMES,
    ) -> None:
        self.path = path
        self.interval = interval_seconds
        self.reset_frames = reset_frames
        self.checkpoints = 0  # background checkpoints run (tests, debugging)
        self.resets = 0  # checkpoints the writer finished to start the log over
        self.failed = False  # the thread could not open the file: SQLite checkpoints again
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._reset_due = False
        self._hurry = False
        self._handed_back = False
        self._copied = 0  # frames copied as of the last background checkpoint
        self._lock = threading.Lock()  # one checkpoint at a time in this process
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def take_over(self, connection: sqlite3.Connection) -> None:
        """Turn SQLite's automatic checkpoint off on the writer's (new) connection."""
        if not self.failed:
            connection.execute("PRAGMA wal_autocheckpoint=0")

    def committed(self, connection: sqlite3.Connection) -> None:
        """After a commit, on the writer's thread and connection, outside a transaction."""
        if self.failed:
            if not self._handed_back:
                connection.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT}")
                self._handed_back = True
            return
        self._due.set()
        if not self._reset_due:
            return
        with self._lock:  # not beside the background checkpoint: one of the two would be busy
            self._reset_due = False
            self.resets += 1
            try:
                connection.execute(CHECKPOINT).fetchall()
            except sqlite3.Error as exc:
                log.debug("WAL checkpoint on the writer's connection: %s", exc)

    def stop(self) -> None:
        self._stopping.set()
        self._due.set()
        self._thread.join()

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None  # opened after the first commit
        try:
            while True:
                self._due.wait()
                if self._stopping.wait(HURRY_SECONDS if self._hurry else self.interval):
                    return
                self._due.clear()
                if connection is None:
                    connection = sqlite3.connect(
                        self.path, isolation_level=None, check_same_thread=False, timeout=0
                    )
                self._checkpoint(connection)
        except sqlite3.Error as exc:
            self.failed = True
            log.warning("WAL checkpoints back to SQLite's own: %s", exc)
        finally:
            if connection is not None:
                connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if self._reset_due:  # the writer finishes this one
                return
            try:
                [(_busy, frames, copied)] = connection.execute(CHECKPOINT).fetchall()
            except sqlite3.OperationalError as exc:  # e.g. busy: another process checkpoints
                log.debug("WAL checkpoint: %s", exc)
                return
            self.checkpoints += 1
            self._hurry = frames >= self.reset_frames
            if self._hurry and copied == frames and copied - self._copied <= SHORT_PASS_FRAMES:
                self._reset_due = True
            self._copied = copied
