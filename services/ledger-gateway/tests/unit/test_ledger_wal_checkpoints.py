"""The WAL is checkpointed beside the writer, the log starts over, nothing is lost (real SQLite)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from p2e_ledger_gateway.wal_checkpoints import WalCheckpointer

PAGE = 4096


def _writer(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    return connection


def _commit(connection: sqlite3.Connection, rows: int) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT INTO t (v) VALUES (?)", [(b"x" * 2000,)] * rows)
    connection.execute("COMMIT")


def _wal_frames(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // (PAGE + 24) if wal.exists() else 0


def test_the_thread_checkpoints_and_the_log_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = _writer(path)
    checkpointer = WalCheckpointer(
        str(path), name="test-checkpoints", interval_seconds=0.005, reset_frames=200
    )
    try:
        checkpointer.take_over(writer)
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for _ in range(300):  # ~2 pages a row: ~6,000 frames in all, 20 per commit
            _commit(writer, 10)
            checkpointer.committed(writer)
            time.sleep(0.001)
        deadline = time.monotonic() + 5
        while checkpointer.resets < 3 and time.monotonic() < deadline:
            _commit(writer, 10)
            checkpointer.committed(writer)
            time.sleep(0.005)
    finally:
        checkpointer.stop()
    assert checkpointer.checkpoints > 10
    assert checkpointer.resets >= 3  # the writer finished a checkpoint and the log restarted
    assert _wal_frames(path) < 2_000  # without restarts the log would hold every frame
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] >= 3000
    writer.close()
    # Everything committed is in the database file once the WAL is gone.
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] >= 3000
    reader.close()


def test_a_checkpointer_that_cannot_open_the_file_hands_checkpoints_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = _writer(path)
    checkpointer = WalCheckpointer(
        str(tmp_path / "missing" / "ledger.db"), name="test-checkpoints", interval_seconds=0.001
    )
    try:
        checkpointer.take_over(writer)
        _commit(writer, 1)
        checkpointer.committed(writer)  # wakes the thread, which fails to open its file
        deadline = time.monotonic() + 5
        while not checkpointer.failed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.failed
        _commit(writer, 1)
        checkpointer.committed(writer)
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    finally:
        checkpointer.stop()
        writer.close()
