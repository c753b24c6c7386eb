"""The same ledger on PostgreSQL: the main flows, the audit chain, and write retries."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.channels import Caller
from p2e_kit.db import create_engine
from p2e_kit.testing import DEFAULT_TEST_POSTGRES
from p2e_ledger_gateway import transfers
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.ledger import Ledger, LedgerOptions
from p2e_ledger_gateway.money_backend import SqlMoney
from p2e_ledger_gateway.policy import NO_POLICY
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.store import create_schema, wallets
from p2e_ledger_gateway.transfers import TransferRequest
from p2engine.ledger.v1 import ledger_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb

pytestmark = pytest.mark.postgres


async def test_flows_on_postgres(make_settings, postgres_url, serve_ledger) -> None:
    async with serve_ledger(make_settings(postgres_url)) as ledger:
        created = await ledger.init("alice", "bob", "boss")
        assert list(created.created_agent_ids) == ["alice", "bob", "boss"]
        assert list((await ledger.init("alice")).created_agent_ids) == []
        transfer = await ledger.pay("alice", "bob", "60", request_id="pg1")
        assert transfer.from_balance_after.amount == "40.00"
        assert (await ledger.pay("alice", "bob", "60", request_id="pg1")).replayed
        error = await ledger.error(ledger.pay("alice", "bob", "60", request_id="pg2"))
        assert error.reason == "INSUFFICIENT_FUNDS"
        assert (await ledger.error(ledger.pay("alice", "bob", "61", request_id="pg1"))).code == (
            "ALREADY_EXISTS"
        )
        await ledger.pay("alice", "boss", "40")
        await ledger.pay("bob", "boss", "100")
        pending = await ledger.error(ledger.pay("boss", "bob", "240", request_id="pg3"))
        approve = pb.ApproveTransferRequest(transfer_id=pending.metadata["approval_id"])
        approved = await ledger.stub.ApproveTransfer(approve, metadata=ledger.operator)
        assert approved.status == ledger_pb2.TRANSFER_STATUS_SETTLED
        await ledger.stub.FreezeWallet(
            pb.FreezeWalletRequest(agent_id="bob"), metadata=ledger.operator
        )
        assert (await ledger.error(ledger.pay("bob", "alice", "1"))).reason == "WALLET_FROZEN"

        metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
        assert metrics.total_supply == metrics.total_minted
        assert metrics.total_supply.amount == "300.00"
        history = await ledger.stub.ListTransactions(
            pb.ListTransactionsRequest(agent_id="bob", page_size=2)
        )
        assert len(history.transfers) == 2 and history.next_page_token
        info = await ledger.stub.GetDebugInfo(pb.GetDebugInfoRequest())
        assert info.endpoint.startswith("postgresql+asyncpg://postgres@") and info.connected
        verify = await ledger.stub.VerifyAudit(pb.VerifyAuditRequest())
        assert verify.valid and verify.checked == info.audit_head_sequence
        await ledger.app.db.write(
            lambda conn: conn.execute(text("DELETE FROM ledger_audit_events WHERE sequence = 4"))
        )
        broken = await ledger.stub.VerifyAudit(pb.VerifyAuditRequest())
        assert (broken.valid, broken.first_bad_sequence) == (False, 4)


async def test_check_constraint_refuses_negative_balances(
    postgres_url, make_settings, serve_ledger
) -> None:
    async with serve_ledger(make_settings(postgres_url)) as ledger:
        await ledger.init("alice")
        with pytest.raises(DBAPIError):
            await ledger.app.db.write(
                lambda conn: conn.execute(
                    text("UPDATE ledger_wallets SET balance = -1 WHERE agent_id = 'alice'")
                )
            )
        assert await ledger.balance("alice") == "100.00"


LEDGER_TABLES = ("ledger_wallets", "ledger_transfers", "ledger_audit_events", "ledger_audit_head")


async def table_scans(url: str) -> dict[str, int]:
    """How many times PostgreSQL scanned each ledger table, once every other session of the
    database has ended (a session's statistics reach the shared counters when it exits)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        counts: dict[str, int] = {}
        for _ in range(100):
            others = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            rows = await conn.fetch(
                "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY($1)",
                list(LEDGER_TABLES),
            )
            now = {row["relname"]: row["seq_scan"] for row in rows}
            if others == 0 and now == counts:
                return counts
            counts = now
            await asyncio.sleep(0.1)
        raise AssertionError(f"the database's sessions did not end: {counts}")
    finally:
        await conn.close()


async def test_transfer_batches_scan_no_table(postgres_url) -> None:
    """The writer finds every row of a transfer batch by key, on tables the planner has never
    measured (no ANALYZE ran, as where autovacuum is off) and in the generic plans that
    PostgreSQL settles on after a statement's fifth run: a scan would grow with the table."""
    operator = Caller("operator", "ops")
    db = Database(create_engine(postgres_url))
    await create_schema(db.engine)
    await Ledger(db, LedgerOptions()).init_wallets(operator, ["a", "b", "c"], "1.00", "")
    await db.close()
    before = await table_scans(postgres_url)

    db = Database(create_engine(postgres_url))
    currency = LedgerOptions().currency
    money = SqlMoney(db, currency)
    outcomes = []
    try:
        for n in range(8):
            items = [
                (TransferRequest("a", "b", 1, "", f"r{n}", "agent:a"), NO_POLICY),
                (TransferRequest("b", "c", 2, "", f"r{n}", "agent:b"), NO_POLICY),
                (TransferRequest("c", "a", 500, "", f"r{n}", "agent:c"), NO_POLICY),  # too much
                (TransferRequest("a", "b", 1, "", f"r{max(n - 1, 0)}", "agent:a"), NO_POLICY),
            ]
            outcomes += await db.write(
                lambda conn, items=items: transfers.create_many(conn, money, items, currency)
            )
    finally:
        await db.close()

    records = [o for o in outcomes if isinstance(o, TransferRecord)]
    assert len(records) == 32 and sum(r.replayed for r in records) == 8
    assert sum(r.status == Status.FAILED and not r.replayed for r in records) == 8
    assert await table_scans(postgres_url) == before


async def test_a_scan_the_writer_cannot_avoid_is_not_compiled(postgres_url) -> None:
    """With scans ruled out, a statement that can only scan (no index on its filter) is
    costed at 10^10 and would be JIT-compiled at every execution (~100 ms on this machine's
    PostgreSQL): the writer's session has JIT off. (A PostgreSQL built without JIT passes
    either way.)"""
    db = Database(create_engine(postgres_url))
    try:
        await create_schema(db.engine)
        explain = "EXPLAIN (ANALYZE) SELECT count(*) FROM ledger_transfers WHERE reason = 'x'"
        plan = await db.write(lambda conn: _lines(conn, explain))
    finally:
        await db.close()
    assert any("Seq Scan on ledger_transfers" in line for line in plan), plan
    assert not any(line.startswith("JIT") for line in plan), plan


async def _lines(conn: AsyncConnection, sql: str) -> list[str]:
    return list((await conn.execute(text(sql))).scalars().all())


class SerializationFailure(Exception):
    sqlstate = "40001"


async def test_write_retries_serialization_failures(postgres_url) -> None:
    db = Database(create_engine(postgres_url), retry_attempts=3)
    attempts = []

    async def work(conn: AsyncConnection) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise DBAPIError("UPDATE ...", {}, SerializationFailure("could not serialize"))
        return (await conn.execute(text("SELECT 'ok'"))).scalar_one()

    try:
        assert await db.write(work) == "ok"
        assert len(attempts) == 3
        attempts.clear()

        async def always(conn: AsyncConnection) -> None:
            attempts.append(1)
            raise DBAPIError("UPDATE ...", {}, SerializationFailure("could not serialize"))

        with pytest.raises(DBAPIError):
            await db.write(always)
        assert len(attempts) == 3
    finally:
        await db.close()


async def test_lost_database_is_unavailable_not_internal(
    make_settings, postgres_url, serve_ledger
) -> None:
    async with serve_ledger(make_settings(postgres_url)) as ledger:
        await ledger.init("alice")
        name = postgres_url.rsplit("/", 1)[1]
        admin_url = os.environ.get("P2E_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES)
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        info = await ledger.stub.GetDebugInfo(pb.GetDebugInfoRequest())
        assert (info.connected, info.audit_head_sequence) == (False, 0)
        error = await ledger.error(ledger.stub.GetBalance(pb.GetBalanceRequest(agent_id="alice")))
        assert (error.code, error.reason) == ("UNAVAILABLE", "DATABASE_UNAVAILABLE")
        error = await ledger.error(ledger.pay("alice", "bob", "1"))
        assert error.code == "UNAVAILABLE"


async def test_writer_reconnects_after_its_connection_is_killed(
    make_settings, postgres_url, serve_ledger
) -> None:
    """The PostgreSQL writer keeps one connection between groups; when the server ends it
    (a restart, an idle timeout), the next transfers still succeed, once each."""
    async with serve_ledger(make_settings(postgres_url)) as ledger:
        await ledger.init("alice", "bob")
        await ledger.pay("alice", "bob", "1", request_id="before")
        name = postgres_url.rsplit("/", 1)[1]
        admin_url = os.environ.get("P2E_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES)
        admin = await asyncpg.connect(admin_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        finally:
            await admin.close()
        assert killed >= 1
        # Straight to the ledger, not over gRPC: the client's retry on UNAVAILABLE would hide
        # a first failure.
        alice = Caller("agent", "alice")
        for n in range(3):
            record = await ledger.app.ledger.create_transfer(
                alice, from_agent="", to_agent="bob", amount="1", reason="", request_id=f"a{n}"
            )
            assert record.from_balance_after == 9800 - 100 * n
        assert (await ledger.pay("alice", "bob", "1", request_id="a0")).replayed
        assert await ledger.balance("bob") == "104.00"


_NEW_WALLET = insert(wallets)


async def test_statements_sent_straight_to_asyncpg_are_inside_the_transaction(
    postgres_url,
) -> None:
    """A unit that raises after writing leaves nothing behind, also once its statement is
    planned and sent straight to asyncpg (from its second run on)."""
    db = Database(create_engine(postgres_url))
    await create_schema(db.engine)
    try:
        for n in range(3):

            async def work(conn: AsyncConnection, n: int = n) -> None:
                row = {"agent_id": f"w{n}", "balance": 1, "frozen": False}
                await conn.execute(_NEW_WALLET, row | {"create_time": 1})
                raise RuntimeError("after the write")

            with pytest.raises(RuntimeError):
                await db.write(work)
        count = select(func.count()).select_from(wallets)
        assert (await db.read(lambda conn: conn.execute(count))).scalar_one() == 0
    finally:
        await db.close()
