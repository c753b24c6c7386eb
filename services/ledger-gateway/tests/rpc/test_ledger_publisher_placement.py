"""Where the outbox publisher runs, end to end: real SQLite files, PostgreSQL, nats-server.

With the transfer writer in a child process (the default), the publisher runs beside it in
that child: the child publishes what its batches commit as soon as they commit, the gateway
wakes it with a frame after its own writes (approvals, rejections), a child that dies is
replaced without waiting for a batch, and the child stops cleanly with the gateway. With
`transfer_writer: inline` the publisher runs on the gateway's event loop. Whatever happens,
JetStream holds every event exactly once and the saved cursor ends past every row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, make_url, select, update

from p2e_kit.bus import LEDGER, MSG_ID_HEADER, Bus, ledger_subject
from p2e_kit.channels import Caller
from p2e_kit.errors import FailedPrecondition
from p2e_kit.natsd import NatsServer
from p2e_kit.testing import pid_alive, pid_cmdline
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.outbox import OutboxPublisher
from p2e_ledger_gateway.server import LedgerApp, build_app, running_app
from p2e_ledger_gateway.store import outbox, outbox_cursor
from p2e_ledger_gateway.writer_process import WriterProcess

OPERATOR = Caller("operator", "ops")
TIMEOUT = 60  # seconds: no test hangs on a failure (a child's imports take a few seconds)

MakeSettings = Callable[..., Settings]
Message = tuple[str, str]  # subject, Nats-Msg-Id


def publishing(
    make_settings: MakeSettings, url: str, nats: NatsServer, writer: str, *, poll: bool = True
) -> Settings:
    """Settings publishing to `nats`, transfers written by `writer` ("process" / "inline").
    Without `poll` no poll comes within a test: only a wake-up (a batch's, or the gateway's
    frame) publishes."""
    return make_settings(
        url,
        publish_events=True,
        nats_url=nats.url,
        transfer_writer=writer,
        outbox_poll_seconds=0.2 if poll else 600.0,
    )


async def pay(
    app: LedgerApp, *request_ids: str, payer: str = "alice", amount: str = "1"
) -> list[str]:
    """One settled transfer payer -> bob per request id."""
    ids: list[str] = []
    for request_id in request_ids:
        record = await app.ledger.create_transfer(
            Caller("agent", payer),
            from_agent="",
            to_agent="bob",
            amount=amount,
            reason="",
            request_id=request_id,
        )
        ids.append(record.id)
    return ids


async def init(app: LedgerApp) -> None:
    await app.ledger.init_wallets(OPERATOR, ["alice", "bob", "boss"], "1000", "")


def settled(transfer_ids: list[str], payer: str = "alice") -> set[Message]:
    """The ledger messages of settled transfers payer -> bob."""
    out, into = ledger_subject("transfer_settled", payer), ledger_subject("transfer_settled", "bob")
    return {(out, f"{t}:transfer_settled") for t in transfer_ids} | {
        (into, f"{t}:transfer_settled:bob") for t in transfer_ids
    }


async def counts(app: LedgerApp) -> tuple[int, int]:
    """(outbox rows, rows after the saved cursor: not yet published)."""
    cursor = select(outbox_cursor.c.published_through).scalar_subquery()
    query = select(func.count(), func.count().filter(outbox.c.id > cursor))
    row = (await app.db.read(lambda conn: conn.execute(query.select_from(outbox)))).one()
    return int(row[0]), int(row[1])


async def poll(done: Callable[[], Awaitable[bool]]) -> None:
    """Until `done()` (the caller's `asyncio.timeout` bounds the wait)."""
    while True:
        if await done():
            return
        await asyncio.sleep(0.05)


async def reaped(process: asyncio.subprocess.Process) -> bool:
    return process.returncode is not None


async def freeze(pid: int, url: str) -> None:
    """SIGSTOP `pid` at a moment it holds no write transaction on the SQLite file of `url`.
    Frozen inside one (e.g. its outbox publisher's first prune, which follows the first
    rows it publishes), it would hold back every other writer until it is killed: the
    gateway's next write would wait out its busy timeout and retries."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        if _no_writer(str(make_url(url).database)):
            return
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.01)


def _no_writer(path: str) -> bool:
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # database is locked
        return False
    finally:
        connection.close()


async def all_published(app: LedgerApp, rows: int) -> None:
    async def done() -> bool:
        return await counts(app) == (rows, 0)

    await poll(done)


async def stored(bus: Bus) -> list[Message]:
    """Every message of the LEDGER stream, in stream order."""
    total = (await bus.js.stream_info(LEDGER.name)).state.messages
    if not total:
        return []
    sub = await bus.js.pull_subscribe("p2e.ledger.>", stream=LEDGER.name)
    found: list[Any] = []
    while len(found) < total:
        found += await sub.fetch(total - len(found), timeout=1)
    await sub.unsubscribe()
    return [(m.subject, (m.headers or {})[MSG_ID_HEADER]) for m in found]


def child(app: LedgerApp) -> asyncio.subprocess.Process:
    writer = app.writer
    assert isinstance(writer, WriterProcess)
    process = writer._process
    assert process is not None and process.returncode is None
    return process


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_the_writer_process_publishes_its_batches_and_the_gateways_writes(
    make_settings: MakeSettings, database_url: str, nats_server: NatsServer, bus: Bus
) -> None:
    settings = publishing(make_settings, database_url, nats_server, "process", poll=False)
    async with asyncio.timeout(TIMEOUT), running_app(settings) as app:
        assert app.publisher is None  # the gateway publishes nothing itself
        await init(app)
        ids = await pay(app, "p1", "p2", "p3")
        await all_published(app, 3)  # the batches woke the child's publisher
        assert sorted(await stored(bus)) == sorted(settled(ids))
        process = child(app)
        assert pid_alive(process.pid) and process.pid != os.getpid()
        assert b"p2e_ledger_gateway.writer_process" in pid_cmdline(process.pid)

        # Above boss's approval threshold: pending (the child's batch), then approved by the
        # operator (the gateway's own write, whose frame wakes the child).
        with pytest.raises(FailedPrecondition) as pending:
            await pay(app, "big", payer="boss", amount="500")
        approval = pending.value.metadata["approval_id"]
        await all_published(app, 4)
        await app.ledger.approve(OPERATOR, approval, "")
        await all_published(app, 6)  # transfer_approved and transfer_settled
        boss = {m for m in await stored(bus) if m[1].startswith(approval)}
        assert boss == settled([approval], payer="boss") | {
            (ledger_subject("transfer_pending", "boss"), f"{approval}:transfer_pending"),
            (ledger_subject("transfer_approved", "boss"), f"{approval}:transfer_approved"),
        }
        assert app.writer is not None and app.writer.starts == 1


async def test_a_killed_writer_is_replaced_at_once_and_every_event_arrives_once(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer, bus: Bus
) -> None:
    settings = publishing(make_settings, sqlite_url, nats_server, "process")
    async with asyncio.timeout(TIMEOUT), running_app(settings) as app:
        writer = app.writer
        assert isinstance(writer, WriterProcess)
        await init(app)
        first = await pay(app, "k1", "k2")
        await all_published(app, 2)
        old = child(app)
        await freeze(old.pid, sqlite_url)  # from now on nothing goes out
        # A cursor save lost with the child: k2's row (its messages are in JetStream) is
        # pending again.
        reset = update(outbox_cursor).values(published_through=1)
        await app.db.write(lambda conn: conn.execute(reset))
        assert await counts(app) == (2, 1)

        os.kill(old.pid, signal.SIGKILL)
        # No batch comes: the gateway starts a new child, which publishes k2's row again.
        await all_published(app, 2)
        new = child(app)
        assert writer.starts == 2 and new.pid != old.pid
        await poll(lambda: reaped(old))  # the gateway may let go of it before its exit code
        assert old.returncode == -signal.SIGKILL and not pid_alive(old.pid)

        second = await pay(app, "k3", "k4")
        await all_published(app, 4)
        messages = await stored(bus)
        assert len(messages) == len(set(messages)) == 8  # JetStream dropped the re-sent copies
        assert set(messages) == settled(first + second)
        assert writer.starts == 2


async def test_the_child_stops_cleanly_with_the_gateway(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer
) -> None:
    settings = publishing(make_settings, sqlite_url, nats_server, "process")
    async with asyncio.timeout(TIMEOUT):
        app = await build_app(settings)
        try:
            await init(app)
            await pay(app, "c1")
            await all_published(app, 1)  # the child is up and publishing
            process = child(app)
        finally:
            await app.close()
    assert process.returncode == 0  # it stopped on its own at EOF, its publisher too
    assert not pid_alive(process.pid)


async def test_with_an_inline_writer_the_gateway_publishes(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer, bus: Bus
) -> None:
    settings = publishing(make_settings, sqlite_url, nats_server, "inline", poll=False)
    async with asyncio.timeout(TIMEOUT), running_app(settings) as app:
        assert app.writer is None and isinstance(app.publisher, OutboxPublisher)
        await init(app)
        ids = await pay(app, "i1", "i2")
        await all_published(app, 2)
        assert sorted(await stored(bus)) == sorted(settled(ids))
        assert app.publisher.published == 2  # rows, not messages
