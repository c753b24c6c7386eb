"""The outbox relay in a child process, end to end: a real SQLite file, nats-server and child.

The gateway starts `python -m p2e_ledger_gateway.relay`, writes the marks it reports, restarts
it when it dies and stops it with itself; the child also stops on its own when its stdin
closes. Whatever the child goes through, JetStream holds every event exactly once.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select, update

from p2e_kit.bus import LEDGER, MSG_ID_HEADER, Bus, ledger_subject
from p2e_kit.channels import Caller
from p2e_kit.natsd import NatsServer
from p2e_kit.testing import pid_alive, pid_cmdline
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.outbox import OutboxPublisher
from p2e_ledger_gateway.relay import PipeMarks, RelayProcess
from p2e_ledger_gateway.server import LedgerApp, build_app, running_app
from p2e_ledger_gateway.store import outbox

OPERATOR = Caller("operator", "ops")
# One transfer_settled row, which the relay publishes as three messages: the payer's and the
# payee's transfer_settled, and one artifact.
ROWS_PER_TRANSFER = 1
TIMEOUT = 15  # seconds: no test hangs on a failure

MakeSettings = Callable[..., Settings]
Message = tuple[str, str]  # subject, Nats-Msg-Id


async def pay(app: LedgerApp, *request_ids: str) -> list[str]:
    """One settled transfer a -> b per request id."""
    ids: list[str] = []
    for request_id in request_ids:
        record = await app.ledger.create_transfer(
            Caller("agent", "a"),
            from_agent="",
            to_agent="b",
            amount="1",
            reason="",
            request_id=request_id,
        )
        ids.append(record.id)
    return ids


async def init(app: LedgerApp) -> None:
    await app.ledger.init_wallets(OPERATOR, ["a", "b"], "100", "")


def expected(transfer_ids: list[str]) -> set[Message]:
    payer, payee = ledger_subject("transfer_settled", "a"), ledger_subject("transfer_settled", "b")
    return {(payer, f"{t}:transfer_settled") for t in transfer_ids} | {
        (payee, f"{t}:transfer_settled:b") for t in transfer_ids
    }


async def counts(app: LedgerApp) -> tuple[int, int]:
    """(outbox rows, rows not yet marked published)."""
    query = select(func.count(), func.count().filter(outbox.c.published_time.is_(None)))
    row = (await app.db.read(lambda conn: conn.execute(query.select_from(outbox)))).one()
    return int(row[0]), int(row[1])


async def poll(done: Callable[[], Awaitable[bool]]) -> None:
    """Until `done()` (the caller's `asyncio.timeout` bounds the wait)."""
    while True:
        if await done():
            return
        await asyncio.sleep(0.05)


async def all_marked(app: LedgerApp, rows: int) -> None:
    async def done() -> bool:
        return await counts(app) == (rows, 0)

    await poll(done)


async def stored(bus: Bus) -> list[Message]:
    """Every message of the LEDGER stream, in stream order."""
    total = (await bus.js.stream_info(LEDGER.name)).state.messages
    sub = await bus.js.pull_subscribe("p2e.ledger.>", stream=LEDGER.name)
    found: list[Any] = []
    while len(found) < total:
        found += await sub.fetch(total - len(found), timeout=1)
    await sub.unsubscribe()
    return [(m.subject, (m.headers or {})[MSG_ID_HEADER]) for m in found]


def child(relay: object) -> asyncio.subprocess.Process:
    assert isinstance(relay, RelayProcess)
    process = relay._process
    assert process is not None
    return process


async def test_child_process_publishes_and_the_gateway_marks(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer, bus: Bus
) -> None:
    settings = make_settings(sqlite_url, publish_events=True, nats_url=nats_server.url)
    assert settings.outbox_relay == "process"  # the default
    async with asyncio.timeout(TIMEOUT), running_app(settings) as app:
        await init(app)
        ids = await pay(app, "p1", "p2", "p3")
        await all_marked(app, 3 * ROWS_PER_TRANSFER)
        messages = await stored(bus)
        assert sorted(messages) == sorted(expected(ids))
        assert isinstance(app.publisher, RelayProcess) and app.publisher.restarts == 0
        process = child(app.publisher)
        assert process.returncode is None and pid_alive(process.pid) and process.pid != os.getpid()
        assert b"p2e_ledger_gateway.relay" in pid_cmdline(process.pid)


async def test_killed_child_is_restarted_and_every_event_arrives_once(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer, bus: Bus
) -> None:
    settings = make_settings(sqlite_url, publish_events=True, nats_url=nats_server.url)
    async with asyncio.timeout(TIMEOUT), running_app(settings) as app:
        relay = app.publisher
        assert isinstance(relay, RelayProcess)
        await init(app)
        first = await pay(app, "k1", "k2")
        await all_marked(app, 2 * ROWS_PER_TRANSFER)
        old = child(relay)
        os.kill(old.pid, signal.SIGSTOP)  # frozen: from now on nothing goes out
        # Marks lost with a child: k1's event (its messages are in JetStream) is pending again.
        reset = update(outbox).where(outbox.c.id <= 1).values(published_time=None)
        await app.db.write(lambda conn: conn.execute(reset))
        second = await pay(app, "k3", "k4")
        assert await counts(app) == (4 * ROWS_PER_TRANSFER, 1 + 2 * ROWS_PER_TRANSFER)

        os.kill(old.pid, signal.SIGKILL)

        async def restarted() -> bool:
            return relay._process is not old

        await poll(restarted)
        new = child(relay)
        assert relay.restarts == 1 and new.pid != old.pid and pid_alive(new.pid)
        assert old.returncode == -signal.SIGKILL and not pid_alive(old.pid)
        await all_marked(app, 4 * ROWS_PER_TRANSFER)
        messages = await stored(bus)
        assert len(messages) == len(set(messages)) == 8  # JetStream dropped the re-sent copies
        assert set(messages) == expected(first + second)
        assert relay.restarts == 1


async def test_child_exits_when_the_gateway_closes(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer
) -> None:
    settings = make_settings(sqlite_url, publish_events=True, nats_url=nats_server.url)
    async with asyncio.timeout(TIMEOUT):
        app = await build_app(settings)
        try:
            await init(app)
            await pay(app, "c1")
            await all_marked(app, ROWS_PER_TRANSFER)  # the child is up and publishing
            process = child(app.publisher)
        finally:
            await app.close()
    assert process.returncode == 0  # it stopped on its own at EOF: not killed
    assert not pid_alive(process.pid)


async def test_child_exits_on_its_own_when_its_stdin_closes(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer
) -> None:
    async with running_app(make_settings(sqlite_url)) as app:  # no publisher: rows stay pending
        await init(app)
        await pay(app, "s1")
        assert await counts(app) == (ROWS_PER_TRANSFER, ROWS_PER_TRANSFER)
        env = os.environ | {"P2E_LEDGER_DATABASE_URL": sqlite_url, "P2E_NATS_URL": nats_server.url}
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "p2e_ledger_gateway.relay"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            assert process.stdin is not None and process.stdout is not None
            async with asyncio.timeout(TIMEOUT):
                report: dict[str, Any] = {}
                while "acked" not in report:
                    report = json.loads(await process.stdout.readline())
                assert report == {"acked": [1], "failed": None, "error": ""}  # s1's one row
                # The child only reports: the marks are the gateway's to write.
                assert await counts(app) == (ROWS_PER_TRANSFER, ROWS_PER_TRANSFER)
                process.stdin.close()  # the gateway is gone
                assert await process.wait() == 0
            assert not pid_alive(process.pid)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_inline_relay_publishes_in_process(
    make_settings: MakeSettings, sqlite_url: str, nats_server: NatsServer, bus: Bus
) -> None:
    settings = make_settings(
        sqlite_url, publish_events=True, nats_url=nats_server.url, outbox_relay="inline"
    )
    async with asyncio.timeout(TIMEOUT), running_app(settings) as app:
        assert isinstance(app.publisher, OutboxPublisher)
        await init(app)
        ids = await pay(app, "i1", "i2")
        await all_marked(app, 2 * ROWS_PER_TRANSFER)
        assert sorted(await stored(bus)) == sorted(expected(ids))
        assert app.publisher.published == 2 * ROWS_PER_TRANSFER  # rows, not messages


async def test_a_large_batch_is_reported_in_bounded_lines() -> None:
    out = io.StringIO()
    await PipeMarks(out).mark(list(range(1, 2501)), 2501, "TimeoutError: nats")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [len(line["acked"]) for line in lines] == [1000, 1000, 500]
    assert [line["failed"] for line in lines] == [None, None, 2501]
    assert [n for line in lines for n in line["acked"]] == list(range(1, 2501))
    out = io.StringIO()
    await PipeMarks(out).mark([], 7, "gone")
    assert json.loads(out.getvalue()) == {"acked": [], "failed": 7, "error": "gone"}
