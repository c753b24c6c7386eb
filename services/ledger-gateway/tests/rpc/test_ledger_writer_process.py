"""The transfer writer in a child process, end to end: real SQLite files, PostgreSQL, children.

Every P2EError crosses the pipe intact. Over gRPC a ledger whose batches are written by
`python -m p2e_ledger_gateway.writer_process` answers every outcome (settled, replayed, reused
request id, unknown wallet, refusals, pending approval) exactly as one that writes them itself,
on SQLite and on PostgreSQL, and ends with the same balances and a valid audit chain. A child
killed between batches is replaced unnoticed; one killed mid-batch costs its callers an
UNAVAILABLE (TRANSFER_WRITER_RESTARTED) and a retry with the same request_id is recorded
exactly once; a dead child is reported with its own exit code even when asyncio's child
watcher reaps it late. The child stops with the gateway, and on its own when the gateway dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import sqlite3
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from p2e_kit import errors
from p2e_kit.channels import Caller
from p2e_kit.db import sqlite_url as make_sqlite_url
from p2e_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    P2EError,
    PreconditionViolation,
)
from p2e_kit.status import decode
from p2e_kit.testing import pid_alive, pid_cmdline, pid_gone
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.policy import NO_POLICY
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.server import build_app
from p2e_ledger_gateway.transfers import Item, TransferRequest
from p2e_ledger_gateway.writer_process import (
    WriterFailed,
    WriterProcess,
    frame,
    read_frame,
    restart_delay,
)
from p2engine.ledger.v1 import ledger_service_pb2 as pb
from p2engine.ledger.v1 import ledger_service_pb2_grpc

TIMEOUT = 60  # seconds: no test hangs on a failure (a child's imports take ~3 s)

MakeSettings = Callable[..., Settings]
ServeLedger = Callable[..., Any]  # serve_ledger(settings) -> async context of a Harness

ID = re.compile(r"\btr_[0-9a-f]+\b")
OPERATOR = Caller("operator", "ops")


# --- helpers -------------------------------------------------------------------------------


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def bytes_read(pid: int) -> int:
    """What the process read so far (`rchar`: pipes included)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")


async def until(done: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    try:
        async with asyncio.timeout(limit):
            while True:
                if done():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {limit}s: {what}") from None


def child(writer: WriterProcess | None) -> asyncio.subprocess.Process:
    assert writer is not None
    process = writer._process
    assert process is not None and process.returncode is None
    return process


@contextlib.asynccontextmanager
async def process_writer_ledger(
    make_settings: MakeSettings, sqlite_url: str, serve_ledger: ServeLedger
) -> AsyncIterator[tuple[Any, WriterProcess]]:
    """A ledger serving (within TIMEOUT) whose batches a child process writes, with wallets
    for alice and bob: (harness, its writer)."""
    async with (
        asyncio.timeout(TIMEOUT),
        serve_ledger(make_settings(sqlite_url, transfer_writer="process")) as h,
    ):
        writer = h.app.writer
        assert isinstance(writer, WriterProcess)
        await h.init("alice", "bob")
        yield h, writer


def anonymize(value: Any, ids: dict[str, str]) -> Any:
    """`value` with each transfer id replaced by T1, T2, ... in order of first appearance, so
    two ledgers' outcomes compare equal when they reuse the same ids at the same places."""
    if isinstance(value, str):
        return ID.sub(lambda m: ids.setdefault(m.group(0), f"T{len(ids) + 1}"), value)
    if isinstance(value, dict):
        return {k: anonymize(v, ids) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [anonymize(v, ids) for v in value]
    return value


def timeless(message: Message) -> dict[str, Any]:
    """A message as a dict without its timestamps (`...Time` fields, at any depth)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("Time")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(MessageToDict(message))


async def outcome(call: Awaitable[Any]) -> dict[str, Any]:
    """What a CreateTransfer answered: the transfer, or the decoded error."""
    try:
        transfer = await call
    except grpc.aio.AioRpcError as exc:
        error = decode(exc)
        return {
            "code": error.code,
            "reason": error.reason,
            "message": error.message,
            "metadata": error.metadata,
            "fields": [(v.field, v.description) for v in error.field_violations],
            "preconditions": [
                (v.type, v.subject, v.description) for v in error.precondition_violations
            ],
        }
    return {"code": "OK", "transfer": timeless(transfer)}


# --- 1. the frames -------------------------------------------------------------------------


def every_error() -> list[P2EError]:
    """One instance of each P2EError class of p2e_kit.errors, with every attribute set."""
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, P2EError) and c.__module__ == errors.__name__
    ]
    made: list[P2EError] = []
    for cls in classes:
        meta = {"transfer_id": "tr_1", "n": cls.__name__}
        if cls is InvalidArgument:
            made.append(
                InvalidArgument(
                    "bad amount",
                    field="amount",
                    violations=[FieldViolation("to_agent", "empty")],
                    reason="AMOUNT_TOO_PRECISE",
                    metadata=meta,
                )
            )
        elif cls is FailedPrecondition:
            violation = PreconditionViolation("INSUFFICIENT_FUNDS", "wallet:a", "too poor")
            made.append(
                FailedPrecondition(
                    "insufficient",
                    violations=[violation],
                    reason="INSUFFICIENT_FUNDS",
                    metadata=meta,
                )
            )
        else:
            made.append(cls(f"a {cls.__name__}", reason=f"{cls.__name__.upper()}_R", metadata=meta))
        made.append(cls(f"plain {cls.__name__}"))  # default reason, no metadata
    return made


async def test_every_error_crosses_the_pipe_intact() -> None:
    sent = every_error()
    names = {type(e).__name__ for e in sent}
    assert {"P2EError", "InvalidArgument", "NotFound", "FailedPrecondition"} <= names
    assert len(names) >= 11  # the base and (at least) its ten subclasses of errors.py
    reader = asyncio.StreamReader()
    for error in sent:
        reader.feed_data(frame(("refused", error)))
    reader.feed_data(frame(sent))  # a batch's outcomes: one list of errors
    reader.feed_eof()
    received = [(await read_frame(reader))[1] for _ in sent]
    received_list = await read_frame(reader)
    for before, after in [
        *zip(sent, received, strict=True),
        *zip(sent, received_list, strict=True),
    ]:
        assert type(after) is type(before) and after is not before
        assert (str(after), after.args, after.message) == (str(before), before.args, before.message)
        assert (after.reason, after.metadata, after.code) == (
            before.reason,
            before.metadata,
            before.code,
        )
        assert vars(after) == vars(before)  # violations and anything else set on it
    invalid = received[sent.index(next(e for e in sent if isinstance(e, InvalidArgument)))]
    assert isinstance(invalid, InvalidArgument)
    assert invalid.violations == [
        FieldViolation("to_agent", "empty"),
        FieldViolation("amount", "bad amount"),
    ]
    with pytest.raises(asyncio.IncompleteReadError):  # the stream ends between frames
        await read_frame(reader)


def test_a_child_that_keeps_failing_is_started_less_and_less_often() -> None:
    delays, delay = [], 1.0
    for _ in range(7):  # the database cannot be opened: every start fails
        delay = restart_delay(delay, started=False, ran_seconds=3.0)
        delays.append(delay)
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert restart_delay(30.0, started=True, ran_seconds=2.0) == 30.0  # died young
    assert restart_delay(30.0, started=True, ran_seconds=600.0) == 1.0  # ran well: at once


async def test_a_truncated_frame_is_an_incomplete_read() -> None:
    data = frame(("ok", [NotFound("no wallet", reason="WALLET_NOT_FOUND")]))
    for cut in (2, len(data) - 1):  # inside the length, inside the pickle
        reader = asyncio.StreamReader()
        reader.feed_data(data[:cut])
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader)


# --- 2, 3. the same answers as an inline writer ----------------------------------------------


async def script(h: Any) -> dict[str, Any]:
    """The same calls on a ledger: every answer, then the final state, ids anonymized."""
    await h.init("alice", "bob", "carol", "kid", "boss")
    answers = [
        await outcome(h.pay("alice", "bob", "12.5", request_id="r1", reason="lunch")),
        await outcome(h.pay("alice", "bob", "12.50", request_id="r1", reason="lunch")),  # replay
        await outcome(h.pay("alice", "bob", "13", request_id="r1", reason="lunch")),  # reused
        await outcome(h.pay("alice", "ghost", "1", request_id="r2")),  # unknown payee
        await outcome(h.pay("alice", "bob", "500", request_id="r3")),  # insufficient funds
        await outcome(h.pay("alice", "bob", "500", request_id="r3")),  # ... replayed
        await outcome(h.pay("kid", "carol", "1", request_id="k1")),  # not an allowed recipient
        await outcome(h.pay("kid", "alice", "60", request_id="k2")),  # above its limit
        await outcome(h.pay("alice", "boss", "50", request_id="r4")),
        await outcome(h.pay("carol", "boss", "100", request_id="r5")),
        await outcome(h.pay("boss", "alice", "250", request_id="b1")),  # needs approval
        await outcome(h.pay("boss", "alice", "250", request_id="b1")),  # ... replayed
        await outcome(h.pay("boss", "carol", "40", request_id="b2")),  # below the threshold
    ]
    # Concurrent, independent of their order: batches of several mixed outcomes.
    answers += await asyncio.gather(
        outcome(h.pay("carol", "alice", "10", request_id="c1")),
        outcome(h.pay("bob", "ghost", "1", request_id="c2")),
        outcome(h.pay("kid", "bob", "5", request_id="c3")),
        outcome(h.pay("alice", "bob", "12.5", request_id="r1", reason="lunch")),
        outcome(h.pay("kid", "carol", "2", request_id="c4")),
        outcome(h.pay("boss", "bob", "201", request_id="c5")),
    )
    overview = await h.stub.GetOverview(pb.GetOverviewRequest())
    metrics = await h.stub.GetMetrics(pb.GetMetricsRequest())
    verify = await h.stub.VerifyAudit(pb.VerifyAuditRequest())
    audit = await h.stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=1000))
    ids: dict[str, str] = {}
    return {
        "answers": anonymize(answers, ids),
        "wallets": timeless(overview),
        "metrics": timeless(metrics),
        "verify": timeless(verify),
        "audit": sorted((e.event_type, e.actor, e.agent_id) for e in audit.events),
    }


def check_script(found: dict[str, Any]) -> None:
    """What the script must answer (whoever writes the batches)."""
    answers = found["answers"]
    codes = [(a["code"], a.get("reason", "")) for a in answers]
    assert codes == [
        ("OK", ""),
        ("OK", ""),
        ("ALREADY_EXISTS", "REQUEST_ID_REUSED"),
        ("NOT_FOUND", "WALLET_NOT_FOUND"),
        ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS"),
        ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS"),
        ("FAILED_PRECONDITION", "RECIPIENT_NOT_ALLOWED"),
        ("FAILED_PRECONDITION", "LIMIT_EXCEEDED"),
        ("OK", ""),
        ("OK", ""),
        ("FAILED_PRECONDITION", "APPROVAL_REQUIRED"),
        ("FAILED_PRECONDITION", "APPROVAL_REQUIRED"),
        ("OK", ""),
        ("OK", ""),
        ("NOT_FOUND", "WALLET_NOT_FOUND"),
        ("OK", ""),
        ("OK", ""),
        ("FAILED_PRECONDITION", "RECIPIENT_NOT_ALLOWED"),
        ("FAILED_PRECONDITION", "APPROVAL_REQUIRED"),
    ]
    first, replay, reused = answers[0]["transfer"], answers[1]["transfer"], answers[2]
    assert first["id"] == replay["id"] == "T1" and replay["replayed"] and "replayed" not in first
    assert first["fromBalanceAfter"]["amount"] == replay["fromBalanceAfter"]["amount"] == "87.50"
    assert reused["metadata"] == {"transfer_id": "T1"}
    poor, poor_again = answers[4], answers[5]
    assert poor["metadata"] == {"transfer_id": "T2", "replayed": "false"}
    assert poor_again["metadata"] == {"transfer_id": "T2", "replayed": "true"}
    assert poor["preconditions"][0][:2] == ["INSUFFICIENT_FUNDS", "wallet:alice"]
    pending = answers[10]["metadata"]
    assert pending["approval_id"] == pending["transfer_id"] and pending["replayed"] == "false"
    assert answers[11]["metadata"] == pending | {"replayed": "true"}
    assert answers[16]["transfer"]["replayed"] and answers[16]["transfer"]["id"] == "T1"
    balances = {w["agentId"]: w["balance"]["amount"] for w in found["wallets"]["wallets"]}
    assert balances == {
        "alice": "47.50",  # 100 - 12.50 - 50 + 10
        "bob": "117.50",  # 100 + 12.50 + 5
        "boss": "210.00",  # 100 + 50 + 100 - 40
        "carol": "30.00",  # 100 - 100 + 40 - 10
        "kid": "95.00",
    }
    assert found["verify"]["valid"] and int(found["verify"]["checked"]) == len(found["audit"])


async def compare_with_inline(
    serve_ledger: ServeLedger, process: Settings, inline: Settings
) -> None:
    """The script on a ledger without the child writer, then on one with it: the answers
    and the final state are the expected ones, and the same."""
    async with asyncio.timeout(TIMEOUT):
        async with serve_ledger(inline) as h:
            assert h.app.writer is None
            expected = await script(h)
        async with serve_ledger(process) as h:
            writer = h.app.writer
            assert isinstance(writer, WriterProcess)
            found = await script(h)
            process_ = child(writer)
            assert process_.pid == writer.pid and process_.pid != os.getpid()
            assert b"p2e_ledger_gateway.writer_process" in pid_cmdline(process_.pid)
            assert writer.starts == 1
        # Leaving the served ledger stopped the child: at EOF, on its own, not killed.
        assert process_.returncode == 0 and not pid_alive(process_.pid)
        assert h.app.writer is None
    check_script(expected)
    check_script(found)
    assert found == expected


async def test_child_writer_answers_as_the_inline_one_sqlite(
    make_settings: MakeSettings, sqlite_url: str, serve_ledger: ServeLedger, tmp_path: Path
) -> None:
    inline = make_settings(make_sqlite_url(tmp_path / "inline.db"), transfer_writer="inline")
    await compare_with_inline(
        serve_ledger, make_settings(sqlite_url, transfer_writer="process"), inline
    )


@pytest.mark.postgres
async def test_child_writer_answers_as_the_inline_one_postgres(
    make_settings: MakeSettings, postgres_url: str, serve_ledger: ServeLedger, sqlite_url: str
) -> None:
    # The inline reference runs on SQLite: the answers do not depend on the database either.
    inline = make_settings(sqlite_url, transfer_writer="inline")
    await compare_with_inline(
        serve_ledger, make_settings(postgres_url, transfer_writer="process"), inline
    )


# --- 4, 5. the child killed -------------------------------------------------------------------


def request(payer: str, payee: str, cents: int, request_id: str) -> Item:
    return (TransferRequest(payer, payee, cents, "", request_id, f"agent:{payer}"), NO_POLICY)


async def test_child_killed_between_batches_is_replaced(
    make_settings: MakeSettings, sqlite_url: str, serve_ledger: ServeLedger
) -> None:
    async with process_writer_ledger(make_settings, sqlite_url, serve_ledger) as (h, writer):
        assert (await h.pay("alice", "bob", "1", request_id="k1")).from_balance_after.amount == (
            "99.00"
        )
        # One batch straight to the child: mixed outcomes, in order, as the ledger's records.
        outcomes = await writer.write(
            [
                request("alice", "bob", 200, "w1"),
                request("alice", "ghost", 100, "w2"),
                request("alice", "bob", 300, "w1"),  # w1 again, other amount
                request("bob", "alice", 100_000, "w3"),
                request("alice", "bob", 100, "k1"),  # the gRPC transfer's replay
            ]
        )
        settled, missing, reused, poor, replay = outcomes
        assert isinstance(settled, TransferRecord) and settled.status is Status.SETTLED
        assert settled.from_balance_after == 9700 and not settled.replayed
        assert isinstance(missing, NotFound) and missing.reason == "WALLET_NOT_FOUND"
        assert isinstance(reused, AlreadyExists) and reused.metadata == {"transfer_id": settled.id}
        assert isinstance(poor, TransferRecord) and poor.failure_reason == "INSUFFICIENT_FUNDS"
        assert isinstance(replay, TransferRecord) and replay.replayed
        # An unexpected error in the child fails the batch, not the child.
        old = child(writer)
        with pytest.raises(WriterFailed, match="AttributeError"):
            await writer.write([("not a request", NO_POLICY)])  # type: ignore[list-item]
        assert child(writer) is old and writer.starts == 1

        os.kill(old.pid, signal.SIGKILL)
        await until(lambda: writer.pid is None, "the gateway saw its child die")
        # (it may let go of the child before the reaping has set its exit code)
        await until(lambda: old.returncode is not None, "the dead child was reaped")
        assert old.returncode == -signal.SIGKILL and not pid_alive(old.pid)

        transfer = await h.pay("alice", "bob", "2", request_id="k2")
        assert transfer.from_balance_after.amount == "95.00" and not transfer.replayed
        new = child(writer)
        assert writer.starts == 2 and new.pid != old.pid and pid_alive(new.pid)
        assert (await h.balance("alice"), await h.balance("bob")) == ("95.00", "105.00")
        assert (await h.stub.VerifyAudit(pb.VerifyAuditRequest())).valid


async def test_child_killed_mid_batch_is_unavailable_and_the_retry_counts_once(
    make_settings: MakeSettings, sqlite_url: str, serve_ledger: ServeLedger
) -> None:
    path = sqlite_url.split(":///", 1)[1]
    async with process_writer_ledger(make_settings, sqlite_url, serve_ledger) as (h, writer):
        await h.pay("alice", "bob", "1", request_id="warm")  # the child is up
        old = child(writer)
        before = bytes_read(old.pid)

        # The test holds SQLite's write lock: the child's BEGIN IMMEDIATE waits in its busy
        # handler (10 s, p2e_kit.db.SQLITE_BUSY_TIMEOUT_MS) and the child is killed well
        # within it, half a second after it read the batch (`rchar` grew). The harness's
        # channel retries UNAVAILABLE by itself (p2e_kit.channels): this one does not, so
        # the caller sees what the gateway answered.
        channel = grpc.aio.insecure_channel(h.address, options=[("grpc.enable_retries", 0)])
        stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        mid = pb.CreateTransferRequest(to_agent="bob", amount="7", request_id="mid")
        lock = sqlite3.connect(path, isolation_level=None, timeout=1)
        try:
            lock.execute("BEGIN IMMEDIATE")
            call = asyncio.create_task(
                outcome(stub.CreateTransfer(mid, metadata=h.agent("alice"), timeout=10))
            )
            await until(lambda: bytes_read(old.pid) > before, "the child read the batch", 5)
            await asyncio.sleep(0.5)
            assert not call.done()  # the batch waits for the lock
            os.kill(old.pid, signal.SIGKILL)
            async with asyncio.timeout(5):
                answer = await call
        finally:
            lock.rollback()
            lock.close()
            await channel.close()
        assert answer["code"] == "UNAVAILABLE", answer
        assert answer["reason"] == "TRANSFER_WRITER_RESTARTED"
        assert "retry with the same request_id" in answer["message"]
        assert old.returncode == -signal.SIGKILL and not pid_alive(old.pid)
        assert writer.pid is None and writer.starts == 1
        assert (await h.balance("alice"), await h.balance("bob")) == ("99.00", "101.00")

        retry = await h.pay("alice", "bob", "7", request_id="mid")  # a new child
        assert not retry.replayed and retry.from_balance_after.amount == "92.00"
        again = await h.pay("alice", "bob", "7", request_id="mid")
        assert again.replayed and again.id == retry.id
        assert writer.starts == 2 and child(writer).pid != old.pid
        assert (await h.balance("alice"), await h.balance("bob")) == ("92.00", "108.00")
        history = await h.stub.ListTransactions(pb.ListTransactionsRequest(agent_id="alice"))
        assert [t.request_id for t in history.transfers].count("mid") == 1
        assert (await h.stub.VerifyAudit(pb.VerifyAuditRequest())).valid


async def test_a_dead_child_keeps_its_exit_code_when_the_watcher_reaps_it_late(
    make_settings: MakeSettings,
    sqlite_url: str,
    serve_ledger: ServeLedger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asyncio's child watcher reaps a child with a blocking `os.waitpid(pid, 0)` on a thread of
    # its own; on a busy machine that thread may run late. Here it waits until released, half a
    # second after the kill, while the next batch finds the child dead at once. Reaping it then
    # (`Process.kill()` polls first) would leave asyncio reporting exit code 255.
    real_waitpid = os.waitpid
    released = threading.Event()

    def late_waitpid(pid: int, options: int) -> tuple[int, int]:
        if options == 0:  # the watcher's blocking wait (`Popen` polls with its own reference)
            released.wait(TIMEOUT)
        return real_waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", late_waitpid)
    try:
        async with process_writer_ledger(make_settings, sqlite_url, serve_ledger) as (h, writer):
            await h.pay("alice", "bob", "1", request_id="warm")  # the child is up
            old = child(writer)
            os.kill(old.pid, signal.SIGKILL)
            await until(lambda: pid_gone(old.pid), "the child died", 5)
            asyncio.get_running_loop().call_later(0.5, released.set)

            transfer = await h.pay("alice", "bob", "2", request_id="after")  # a new child
            assert transfer.from_balance_after.amount == "97.00" and not transfer.replayed
            assert old.returncode == -signal.SIGKILL and not pid_alive(old.pid)
            assert writer.starts == 2 and child(writer).pid != old.pid
    finally:
        released.set()


# --- 6. the child stops with its parent ---------------------------------------------------------


async def test_closing_the_app_stops_the_child(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with asyncio.timeout(TIMEOUT):
        app = await build_app(make_settings(sqlite_url, transfer_writer="process"))
        try:
            writer = app.writer
            assert isinstance(writer, WriterProcess)
            await app.ledger.init_wallets(OPERATOR, ["a", "b"], "10", "")
            (settled,) = await writer.write([request("a", "b", 100, "x")])
            assert isinstance(settled, TransferRecord) and settled.status is Status.SETTLED
            process = child(writer)
        finally:
            await app.close()
        assert app.writer is None and writer.pid is None
        assert process.returncode == 0 and not pid_alive(process.pid)
        await app.close()  # twice is fine


PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from p2e_kit.db import create_engine
    from p2e_ledger_gateway.money import Currency
    from p2e_ledger_gateway.policy import NO_POLICY
    from p2e_ledger_gateway.store import create_schema
    from p2e_ledger_gateway.transfers import TransferRequest
    from p2e_ledger_gateway.writer_process import WriterConfig, WriterProcess

    async def main(url):
        engine = create_engine(url)
        await create_schema(engine)
        await engine.dispose()
        writer = WriterProcess(WriterConfig(url, 3, Currency()))
        request = TransferRequest("a", "b", 100, "", "r1", "agent:a")
        (outcome,) = await writer.write([(request, NO_POLICY)])
        print(writer.pid, type(outcome).__name__, outcome.reason, flush=True)
        await asyncio.sleep(600)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_child_exits_when_its_parent_dies(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    with log.open("wb") as stderr:
        parent = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", PARENT, sqlite_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    pid = 0
    try:
        assert parent.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = (await parent.stdout.readline()).decode()
        assert line, f"the parent printed nothing: {log.read_text()}"
        pid_text, kind, reason = line.split()
        pid = int(pid_text)
        assert (kind, reason) == ("NotFound", "WALLET_NOT_FOUND")  # one batch written
        assert pid not in (parent.pid, os.getpid()) and pid_alive(pid)
        assert b"p2e_ledger_gateway.writer_process" in pid_cmdline(pid)
        assert parent_of(pid) == parent.pid

        parent.kill()  # kill -9: no chance to stop its child
        async with asyncio.timeout(10):
            assert await parent.wait() == -signal.SIGKILL
        await until(lambda: pid_gone(pid), f"writer child {pid} exits after its parent died", 10)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if pid and not pid_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- 7. settings ----------------------------------------------------------------------------


async def test_process_is_the_default_but_not_for_an_in_memory_database(
    make_settings: MakeSettings,
    ledger_config_dir: Path,
    tmp_path: Path,
    serve_ledger: ServeLedger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("P2E_LEDGER_TRANSFER_WRITER", raising=False)
    assert Settings.model_fields["transfer_writer"].default == "process"
    assert Settings(config_dir=ledger_config_dir, data_dir=tmp_path).transfer_writer == "process"
    memory = make_settings("sqlite+aiosqlite:///:memory:", transfer_writer="process")
    async with asyncio.timeout(TIMEOUT), serve_ledger(memory) as h:
        assert h.app.db.in_memory and h.app.writer is None
        await h.init("alice", "bob")
        assert (await h.pay("alice", "bob", "3", request_id="m1")).from_balance_after.amount == (
            "97.00"
        )
        assert (await h.pay("alice", "bob", "3", request_id="m1")).replayed
        assert (await h.balance("bob")) == "103.00"
