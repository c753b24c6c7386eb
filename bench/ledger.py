"""Benchmark: ledger transfers through gRPC against their floors, on SQLite and PostgreSQL.

    uv run --frozen python bench/ledger.py [--seconds 3] [--rounds 3] [--no-events]
                                           [--no-sqlite] [--no-postgres] [--set NAME=VALUE ...]

For each database the ledger-gateway runs as its own process (`python -m p2e_ledger_gateway`,
publishing its outbox to a nats-server started here, as deployed), so the clients here and
the server do not share an event loop. Measured in the same run, each cell for `--seconds`:

  echo      gRPC unary Health.Check on that ledger-gateway process, 1 / 8 / 64 clients;
            at 64 clients right before and right after each transfer cell, and a transfer
            cell's share is of the mean of the echo cells beside it (the machine's speed
            drifts by +-20% over minutes on a busy 2-core VM, and more on some); at 64
            clients each transfer path is measured `--rounds` times, alternating with the
            echo, and its verdict is over all its rounds (rates summed against the echo
            beside each round; p50 / p99 of every call)
  spread    CreateTransfer between random pairs of 1,000 agents, 1 / 8 / 64 clients
  hot       CreateTransfer around a cycle of 3 agents (a->b->c->a), 1 / 8 / 64 clients
  no-ledger CreateTransfer through the gateway's own servicer over a ledger that decides and
            stores nothing (bench/no_ledger_server.py, a process of its own), first, at 64
            clients, `--rounds` cells between echo cells on that server: what the call's
            shape costs beyond the echo (metadata, a Transfer answered, a handler that
            awaits). Not a floor in CPU: its answers leave one by one, while a real
            transfer's leave with its batch, which costs gRPC less per call
  raw sql   one transfer per transaction, without gRPC, batching, idempotency or policy,
            with the ledger's own statement functions: the wallets' rows read (FOR UPDATE
            in agent order on PostgreSQL), the move (`SqlMoney.move` + `write_moves`), the
            transfer INSERT, its outbox row and the audit-chain append, run through the
            gateway's `Database.write` (SQLite: the writer thread with group commit;
            PostgreSQL: the writer thread's groups on one connection), in this process, on a
            separate database of the same kind, 1 and 64 concurrent tasks. The gateway
            batches transfers (one transaction decides and writes many), so it can pass
            this floor: it measures what one transfer per transaction costs

PostgreSQL is the local server (`--postgres-admin`); throwaway databases are created and
dropped. `--set NAME=VALUE` gives the gateways a setting (`P2E_LEDGER_NAME`, checked against
the ledger-gateway's settings), to compare configurations without editing code. Prints one table, then the issue's targets: at 64 clients transfers/s >= 60 % of
the echo rate on SQLite and >= 40 % on PostgreSQL, with p99 < 50 ms.

Beside each rate, the CPU it took (`/proc`, Linux): per call, the CPU time of every process
doing the work in the measured window (this process's clients, the ledger-gateway and its
children, nats-server, the PostgreSQL backends of the served database) and the cores busy,
then the same per process (clients, server, writer, nats, postgres).
At 64 clients a transfer's CPU in echo calls is printed with the verdict: at the echo's
utilization a share of S needs a transfer to cost at most 1/S echoes (60 %: 1.67). That
ratio moves much less than the rates on a machine whose speed drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interrupt import run_interruptible
from sqlalchemy import insert, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.channels import caller_metadata
from p2e_kit.db import create_engine, sqlite_url
from p2e_kit.natsd import free_port, start_nats_server
from p2e_kit.subprocess_service import ServiceProcess
from p2e_ledger_gateway import audit, events
from p2e_ledger_gateway.book import Book
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.money_backend import SqlMoney
from p2e_ledger_gateway.policy import Refusal
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.store import create_schema, now_us, outbox, transfers
from p2e_ledger_gateway.store import wallets as wallets_table
from p2e_ledger_gateway.transfers import lock_wallets
from p2engine.ledger.v1 import ledger_service_pb2 as pb
from p2engine.ledger.v1 import ledger_service_pb2_grpc

CONCURRENCY = (1, 8, 64)
SPREAD_AGENTS = [f"w{n:04d}" for n in range(1000)]
HOT_AGENTS = ["hot_a", "hot_b", "hot_c"]
START_BALANCE = "1000000"
TARGET_SHARE = {"sqlite": 0.60, "postgres": 0.40}
TARGET_P99_MS = 50.0
TRANSFER_PATHS = ("spread", "hot", "no-ledger")  # the paths measured against the echo beside them
OPERATOR = caller_metadata("operator", "bench")


@dataclass(frozen=True)
class Cell:
    database: str
    path: str
    clients: int
    rate: float
    p50: float
    p99: float
    count: int
    latencies: tuple[float, ...] = field(default=(), compare=False, repr=False)
    cpu_us: float | None = None  # CPU per call, every process doing the work (CpuMeter)
    cores: float | None = None  # cores busy in the measured window
    parts: dict[str, float] | None = field(default=None, compare=False)  # cpu_us by ROLES
    batch: float | None = None  # transfers per batch the gateway wrote (warm-up included)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(
    op: Callable[[int], Awaitable[object]],
    clients: int,
    seconds: float,
    warmup: float = 0.5,
    meter: CpuMeter | None = None,
) -> tuple[
    float,
    float,
    float,
    int,
    tuple[float, ...],
    float | None,
    float | None,
    dict[str, float] | None,
]:
    """`clients` workers call op(i) in a loop for warm-up + `seconds`: (ops/s completed inside
    the measured window, p50 ms and p99 ms of the ops started in it, their count, their
    latencies in ms, CPU µs per completed op and cores busy in the window, and those µs by
    role, by `meter`)."""
    counter = itertools.count()
    latencies: list[float] = []
    # Everything alive now (the imports, the channels) out of the collector's sight: a full
    # collection here took ~40 ms and stalled every client at once, in the latencies.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + warmup
    stop_at = warm_until + seconds
    completed = 0
    cpu: list[dict[int, float]] = []
    roles: dict[int, str] = {}
    if meter is not None:
        pids = meter.processes()
        roles = CpuMeter.roles(pids)
        loop.call_at(warm_until, lambda: cpu.append(meter.read(pids)))
        loop.call_at(stop_at, lambda: cpu.append(meter.read(pids)))

    async def worker() -> None:
        nonlocal completed
        while (started := loop.time()) < stop_at:
            await op(next(counter))
            ended = loop.time()
            if started >= warm_until:
                latencies.append((ended - started) * 1000)
            if warm_until <= ended <= stop_at:
                completed += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
    cpu_us: float | None = None
    cores: float | None = None
    parts: dict[str, float] | None = None
    if len(cpu) == 2 and completed:
        used = CpuMeter.used(*cpu)
        cpu_us, cores = used * 1e6 / completed, used / seconds
        by_role = CpuMeter.used_by(cpu[0], cpu[1], roles).items()
        parts = {role: spent * 1e6 / completed for role, spent in by_role}
    return completed / seconds, p50, p99, len(latencies), tuple(latencies), cpu_us, cores, parts


def postgres_name(url: str) -> str:
    """The database a PostgreSQL URL names ("" for any other URL)."""
    return make_url(url).database or "" if url.startswith("postgresql") else ""


def cpu_text(cell: Cell) -> str:
    if cell.cpu_us is None or cell.cores is None:
        return ""
    text = f"  {cell.cpu_us:>6.0f} us CPU per call, {cell.cores:.2f} cores"
    return text + (f" ({parts_text(cell.parts)})" if cell.parts else "")


def parts_text(parts: dict[str, float]) -> str:
    """µs per call by role, the idle ones left out: "clients 220, server 430, ..."."""
    return ", ".join(f"{r} {parts[r]:.0f}" for r in ROLES if parts.get(r, 0.0) >= 0.5)


class CpuMeter:
    """CPU seconds so far (user + system, every thread) of the processes doing a cell's work:
    this one and its descendants (the ledger-gateway with its transfer writer, which also
    publishes the outbox; nats-server) and the PostgreSQL backends serving `database`. Reads /proc (Linux):
    `processes()` scans it once before a cell, `read` then opens only their stat files (so a
    reading inside the measured window takes well under a millisecond)."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, database: str = "") -> None:
        self.database = f" {database} " if database else ""  # as in a backend's title

    def processes(self) -> list[int]:
        parents: dict[int, int] = {}
        wanted = {os.getpid()}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
                if self.database:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        title = f.read(300).decode(errors="replace")
                    if title.startswith("postgres:") and self.database in title:
                        wanted.add(int(entry))
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
        grown = True
        while grown:  # descendants
            more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
            wanted |= more
            grown = bool(more)
        return sorted(wanted)

    def read(self, pids: list[int]) -> dict[int, float]:
        seconds = {}
        for pid in pids:
            try:
                fields = _stat_fields(pid)
            except (OSError, IndexError):
                continue
            seconds[pid] = (int(fields[11]) + int(fields[12])) / self.TICK
        return seconds

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two readings of the same processes."""
        return sum(cpu - before[pid] for pid, cpu in after.items() if pid in before)

    @staticmethod
    def roles(pids: list[int]) -> dict[int, str]:
        """Each process's part in the work (`ROLES`), by its command line."""
        found = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read(300).replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found[pid] = "clients" if pid == os.getpid() else _role(command)
        return found

    @staticmethod
    def used_by(
        before: dict[int, float], after: dict[int, float], roles: dict[int, str]
    ) -> dict[str, float]:
        """`used`, summed per role."""
        spent: dict[str, float] = {}
        for pid, cpu in after.items():
            if pid in before:
                role = roles.get(pid, "other")
                spent[role] = spent.get(role, 0.0) + cpu - before[pid]
        return spent


# The parts of a cell's work, in the order printed: this process's clients, the server (the
# ledger-gateway or the no-ledger server), the gateway's transfer writer, nats-server, PostgreSQL.
ROLES = ("clients", "server", "writer", "nats", "postgres", "other")


def _role(command: str) -> str:
    if "p2e_ledger_gateway.writer_process" in command:
        return "writer"
    if "p2e_ledger_gateway" in command or "no_ledger_server" in command:
        return "server"
    if "nats-server" in command:
        return "nats"
    return "postgres" if command.startswith("postgres:") else "other"


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; utime, stime at 11, 12."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2 :].split()


# --- the ledger-gateway process --------------------------------------------------------------


class Gateway(ServiceProcess):
    """`python -m p2e_ledger_gateway` on a free port, stopped in `stop()`."""

    def __init__(
        self,
        tmp: Path,
        nats_url: str,
        database_url: str,
        events: bool,
        settings: dict[str, str] | None = None,
    ) -> None:
        config = tmp / "config"
        config.mkdir(parents=True, exist_ok=True)
        ledger = {"initial_balance": 0, "asset": "P2E", "scale": 2, "policies": {}}
        (config / "config.json").write_text(json.dumps({"ledger": ledger}))
        (config / "agents.yml").write_text("agents: []\n")
        port = free_port()
        self.events = events
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2E_")}
        env |= {
            "P2E_LEDGER_PORT": str(port),
            "P2E_DATA_DIR": str(tmp / "data"),
            "P2E_CONFIG_DIR": str(config),
            "P2E_NATS_URL": nats_url,
            "P2E_LOG_LEVEL": "WARNING",
            "P2E_LEDGER_DATABASE_URL": database_url,
            "P2E_LEDGER_PUBLISH_EVENTS": "true" if events else "false",
        }
        env |= {f"P2E_LEDGER_{name.upper()}": value for name, value in (settings or {}).items()}
        log = tmp / f"ledger-{uuid.uuid4().hex[:6]}.log"
        super().__init__("p2e_ledger_gateway", f"127.0.0.1:{port}", env, log)


async def grpc_cells(
    database: str, gateway: Gateway, seconds: float, rounds: int, run_id: str
) -> tuple[list[Cell], dict[str, object]]:
    """Echo, spread and hot at each concurrency against one gateway process."""
    channel = grpc.aio.insecure_channel(gateway.address)
    try:
        await gateway.start()
        ledger = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        init = pb.InitWalletsRequest(
            agent_ids=SPREAD_AGENTS + HOT_AGENTS, initial_balance=START_BALANCE
        )
        await ledger.InitWallets(init, metadata=OPERATOR, timeout=60)
        await quiet(ledger, run_id, gateway.events)

        async def echo(_: int) -> None:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        cells = []
        paths = (("echo", lambda _clients: echo), *transfer_ops(ledger, run_id))
        *fewer, most = CONCURRENCY
        plan = [(name, op, clients) for name, op in paths for clients in fewer]
        for name, op in paths[1:]:  # at the most clients: echo, transfers, echo, ..., echo
            plan += [(*paths[0], most), (name, op, most)] * rounds
        plan.append((*paths[0], most))
        meter = CpuMeter(postgres_name(gateway.env["P2E_LEDGER_DATABASE_URL"]))
        for name, op, clients in plan:
            before = await ledger.GetDebugInfo(pb.GetDebugInfoRequest())
            result = await measure(op(clients), clients, seconds, meter=meter)
            after = await ledger.GetDebugInfo(pb.GetDebugInfoRequest())
            batches = after.transfer_batches - before.transfer_batches
            batch = (
                (after.batched_transfers - before.batched_transfers) / batches if batches else None
            )
            cell = Cell(database, name, clients, *result, batch=batch)
            cells.append(cell)
            print(
                f"  {database:<9}{name:<8}{clients:>3} clients {cell.rate:>8.0f}/s{cpu_text(cell)}"
                + (f", {batch:.1f} per batch" if batch is not None else ""),
                flush=True,
            )
        info = await ledger.GetDebugInfo(pb.GetDebugInfoRequest())
        metrics = await ledger.GetMetrics(pb.GetMetricsRequest())
        check = {
            "outbox_pending": info.outbox_pending,
            "audit_entries": info.audit_head_sequence,
            "settled": metrics.transaction_count,
            "failed": metrics.failed_count,
            "conserved": metrics.total_supply == metrics.total_minted,
        }
        return cells, check
    finally:
        await channel.close()
        await gateway.stop()


async def quiet(
    ledger: ledger_service_pb2_grpc.LedgerServiceStub, run_id: str, events: bool
) -> None:
    """Wait until the gateway's child processes are up and idle (the transfer writer has
    written a first transfer, the outbox publisher has sent every event so far), so that
    their start-up does not run beside the first cells."""
    first = pb.CreateTransferRequest(to_agent=HOT_AGENTS[1], amount="0.01", request_id=run_id)
    await ledger.CreateTransfer(first, metadata=caller_metadata("agent", HOT_AGENTS[0]), timeout=60)
    for _ in range(600 if events else 0):
        info = await ledger.GetDebugInfo(pb.GetDebugInfoRequest())
        if info.outbox_pending == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)


def transfer_ops(
    ledger: ledger_service_pb2_grpc.LedgerServiceStub, run_id: str
) -> list[tuple[str, Callable[[int], Callable[[int], Awaitable[object]]]]]:
    """("spread"|"hot", clients -> op): one CreateTransfer of 0.01 per call, unique request ids."""
    rng = random.Random(7)
    cell_ids = itertools.count()

    def spread(clients: int) -> Callable[[int], Awaitable[object]]:
        cell = next(cell_ids)

        def op(i: int) -> Awaitable[object]:
            payer, payee = rng.sample(SPREAD_AGENTS, 2)
            return pay(payer, payee, f"{run_id}-{cell}-{i}")

        return op

    def hot(clients: int) -> Callable[[int], Awaitable[object]]:
        cell = next(cell_ids)

        def op(i: int) -> Awaitable[object]:
            payer, payee = HOT_AGENTS[i % 3], HOT_AGENTS[(i + 1) % 3]
            return pay(payer, payee, f"{run_id}-{cell}-{i}")

        return op

    def pay(payer: str, payee: str, request_id: str) -> Awaitable[object]:
        request = pb.CreateTransferRequest(to_agent=payee, amount="0.01", request_id=request_id)
        return ledger.CreateTransfer(request, metadata=caller_metadata("agent", payer), timeout=30)

    return [("spread", spread), ("hot", hot)]


# --- a transfer without the ledger --------------------------------------------------------------


class NoLedgerServer(ServiceProcess):
    """`python -m no_ledger_server` (bench/no_ledger_server.py) on a free port, stopped in
    `stop()`."""

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        here = str(Path(__file__).resolve().parent)
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        env = os.environ | {"P2E_NO_LEDGER_PORT": str(port), "PYTHONPATH": path}
        super().__init__("no_ledger_server", f"127.0.0.1:{port}", env, tmp / "no-ledger.log")


async def no_ledger_cells(tmp: Path, seconds: float, rounds: int, run_id: str) -> list[Cell]:
    """At 64 clients, `rounds` cells of CreateTransfer on the no-ledger server (the gateway's
    servicer over a ledger that does nothing), each between two echo cells on that server."""
    server = NoLedgerServer(tmp)
    channel = grpc.aio.insecure_channel(server.address)
    try:
        await server.start()
        ledger = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        rng = random.Random(5)

        async def echo(_: int) -> None:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

        def transfer(i: int) -> Awaitable[object]:
            payer, payee = rng.sample(SPREAD_AGENTS, 2)
            request = pb.CreateTransferRequest(
                to_agent=payee, amount="0.01", request_id=f"{run_id}-none-{i}"
            )
            return ledger.CreateTransfer(
                request, metadata=caller_metadata("agent", payer), timeout=30
            )

        most = CONCURRENCY[-1]
        plan = [("echo", echo), ("no-ledger", transfer)] * rounds + [("echo", echo)]
        meter = CpuMeter()
        cells = []
        for name, op in plan:
            cell = Cell("grpc", name, most, *await measure(op, most, seconds, meter=meter))
            cells.append(cell)
            print(
                f"  grpc     {name:<10}{most:>3} clients {cell.rate:>8.0f}/s{cpu_text(cell)}",
                flush=True,
            )
        return cells
    finally:
        await channel.close()
        await server.stop()


# --- the raw SQL transaction ----------------------------------------------------------------


async def raw_cells(database: str, url: str, seconds: float) -> list[Cell]:
    """The transfer transaction through the gateway's `Database.write`, as the ledger runs it."""
    engine = create_engine(url)
    db = Database(engine)  # SQLite: the writer thread with group commit, as the gateway
    now = time.time_ns() // 1000
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            rows = [
                {"agent_id": a, "balance": 10**12, "create_time": now}
                for a in SPREAD_AGENTS + HOT_AGENTS
            ]
            await conn.execute(insert(wallets_table), rows)

        money = SqlMoney(db, Currency())

        async def transfer(payer: str, payee: str) -> None:
            await db.write(lambda conn: transfer_sql(conn, money, payer, payee))

        rng = random.Random(3)
        ops = {
            "spread": lambda i: transfer(*rng.sample(SPREAD_AGENTS, 2)),
            "hot": lambda i: transfer(HOT_AGENTS[i % 3], HOT_AGENTS[(i + 1) % 3]),
        }
        cells = []
        meter = CpuMeter(postgres_name(url))
        for name, op in ops.items():
            for clients in (1, 64):
                result = await measure(op, clients, seconds, meter=meter)
                cell = Cell(database, f"raw-{name}", clients, *result)
                cells.append(cell)
                print(
                    f"  {database:<9}raw-{name:<4}{clients:>3} tasks {cell.rate:>10.0f}/s"
                    f"{cpu_text(cell)}",
                    flush=True,
                )
        return cells
    finally:
        await db.close()


async def transfer_sql(conn: AsyncConnection, money: SqlMoney, payer: str, payee: str) -> None:
    """The ledger's own statements for one settled transfer: both wallets read (locked in
    agent order on PostgreSQL), the move (`SqlMoney.move` + `write_moves`: the two wallets'
    UPDATE), the transfer row, its outbox row (`events.outbox_row`) and one audit-chain entry
    (`audit.append`); no idempotency lookup, policy or protobuf, one transfer per
    transaction."""
    book = Book(await lock_wallets(conn, (payer, payee)))
    now = now_us()
    transfer_id = f"tr_{uuid.uuid4().hex}"
    record = TransferRecord(
        id=transfer_id,
        request_id=transfer_id,
        from_agent=payer,
        to_agent=payee,
        amount=1,
        reason="",
        status=Status.SETTLED,
        failure_reason="",
        failure_detail="",
        initiated_by=f"agent:{payer}",
        conversation_id="",
        create_time=now,
        settle_time=now,
    )
    moved = await money.move(conn, record, book)
    assert not isinstance(moved, Refusal)
    await money.write_moves(conn, book)
    record = replace(record, from_balance_after=moved.balance_after)
    await conn.execute(insert(transfers), record.row())
    row = events.outbox_row(events.SETTLED, record, Currency(), now, by=record.initiated_by)
    await conn.execute(insert(outbox), [row])
    payload = {"request_id": transfer_id, "from_agent": payer, "to_agent": payee, "amount": "0.01"}
    entry = {"event_type": "transfer_settled", "actor": f"agent:{payer}", "agent_id": payer}
    await audit.append(conn, [entry | {"transfer_id": transfer_id, "payload": payload}])


# --- databases, report ------------------------------------------------------------------------


@asynccontextmanager
async def postgres_databases(admin_url: str, count: int) -> AsyncIterator[list[str]]:
    """`count` throwaway databases on the local PostgreSQL (dropped after)."""
    import asyncpg

    names = [f"p2e_bench_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    conn = await asyncpg.connect(admin_url, timeout=3)
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
        base = admin_url.rsplit("/", 1)[0]
        yield [f"{base}/{name}" for name in names]
    finally:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def beside(cells: list[Cell], i: int) -> list[Cell]:
    """The echo cells of cell i's database and client count nearest before and after it."""
    c = cells[i]

    def same(e: Cell) -> bool:
        return e.path == "echo" and (e.database, e.clients) == (c.database, c.clients)

    before = next((e for e in reversed(cells[:i]) if same(e)), None)
    after = next((e for e in cells[i + 1 :] if same(e)), None)
    return [e for e in (before, after) if e is not None]


def bars(cells: list[Cell]) -> dict[Cell, float]:
    """Each transfer cell's bar: the mean rate of the echo cells `beside` it."""
    bar = {}
    for i, c in enumerate(cells):
        if c.path in TRANSFER_PATHS:
            rates = [e.rate for e in beside(cells, i)]
            bar[c] = sum(rates) / len(rates)
    return bar


def echo_costs(cells: list[Cell], measured: list[Cell]) -> tuple[float, float] | None:
    """CPU µs per call of the `measured` transfer cells and of the echo cells `beside` them
    (each weighted by its calls), or None without CPU figures."""
    where = {id(c): i for i, c in enumerate(cells)}
    transfers = [(c.cpu_us, c.rate) for c in measured]
    echoes = [(e.cpu_us, e.rate) for c in measured for e in beside(cells, where[id(c)])]
    totals = []
    for pairs in (transfers, echoes):
        calls = sum(rate for _, rate in pairs)
        if not pairs or not calls or any(cpu is None for cpu, _ in pairs):
            return None
        totals.append(sum((cpu or 0.0) * rate for cpu, rate in pairs) / calls)
    return totals[0], totals[1]


def role_costs(cells: list[Cell], measured: list[Cell]) -> tuple[str, str] | None:
    """`echo_costs` by role: the measured cells' and the echo cells' `parts_text`."""
    where = {id(c): i for i, c in enumerate(cells)}
    echoes = [e for c in measured for e in beside(cells, where[id(c)])]
    texts = []
    for group in (measured, echoes):
        calls = sum(c.rate for c in group)
        if not calls or any(c.parts is None for c in group):
            return None
        parts: dict[str, float] = {}
        for c in group:
            for role, us in (c.parts or {}).items():
                parts[role] = parts.get(role, 0.0) + us * c.rate / calls
        texts.append(parts_text(parts))
    return texts[0], texts[1]


def print_costs(cells: list[Cell], measured: list[Cell], need: float | None = None) -> None:
    """A path's CPU per call against the echo's beside it, in all and by process."""
    cost = echo_costs(cells, measured)
    if cost is None:
        return
    bar = f" (the target share needs <= {1 / need:.2f})" if need else ""
    print(
        f"  {'':<16}CPU: a call {cost[0]:.0f} us, an echo {cost[1]:.0f} us: "
        f"{cost[0] / cost[1]:.2f} echoes{bar}"
    )
    by_role = role_costs(cells, measured)
    if by_role is not None:
        print(f"  {'':<16}  by process, a call: {by_role[0]}; an echo: {by_role[1]}")


def report(cells: list[Cell], checks: dict[str, dict[str, object]], loads: list[str]) -> None:
    echo = bars(cells)
    raw = {(c.database, c.path[4:], c.clients): c.rate for c in cells if c.path.startswith("raw")}
    print(
        f"\n{'database':<10}{'path':<12}{'clients':>8}{'per s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'% echo':>8}{'% raw':>7}{'cpu us':>8}{'cores':>7}{'batch':>7}"
    )
    for c in cells:
        of_echo = of_raw = ""
        if c.path in TRANSFER_PATHS:
            of_echo = f"{100 * c.rate / echo[c]:.0f}%"
            floor = raw.get((c.database, c.path, c.clients))
            of_raw = f"{100 * c.rate / floor:.0f}%" if floor else ""
        cpu = f"{c.cpu_us:>8.0f}{c.cores:>7.2f}" if c.cpu_us is not None and c.cores else ""
        batch = f"{c.batch:>7.1f}" if c.batch is not None else ""
        print(
            f"{c.database:<10}{c.path:<12}{c.clients:>8}{c.rate:>10.0f}{c.p50:>9.2f}"
            f"{c.p99:>9.2f}{of_echo:>8}{of_raw:>7}{cpu}{batch}"
        )
    print("\ntargets at 64 clients (transfers/s vs echo/s over every round; p99 of every call):")
    rounds: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if c.clients == 64 and c.path in TRANSFER_PATHS:
            rounds.setdefault((c.database, c.path), []).append(c)
    bare = rounds.pop(("grpc", "no-ledger"), None)
    if bare is not None:
        share = sum(c.rate for c in bare) / sum(echo[c] for c in bare)
        print(
            f"  CreateTransfer without the ledger: {100 * share:.1f}% of echo, p99 "
            f"{pct([ms for c in bare for ms in c.latencies], 0.99):.1f} ms, {len(bare)} rounds"
        )
        print_costs(cells, bare)
    for (database, path), measured in rounds.items():
        share = sum(c.rate for c in measured) / sum(echo[c] for c in measured)
        latencies = [ms for c in measured for ms in c.latencies]
        p50, p99, need = pct(latencies, 0.5), pct(latencies, 0.99), TARGET_SHARE[database]
        verdict = "met" if share >= need and p99 < TARGET_P99_MS else "MISSED"
        print(
            f"  {database:<9}{path:<7}{100 * share:5.1f}% of echo (target {100 * need:.0f}%)"
            f", p50 {p50:5.1f}, p99 {p99:6.1f} ms (target < {TARGET_P99_MS:.0f}), "
            f"{len(measured)} rounds: {verdict}"
        )
        print_costs(cells, measured, need)
    for database, check in checks.items():
        print(f"  {database} after the run: {check}")
    print(
        f"\nload average (1, 5, 15 min): {'; '.join(loads)}; {os.cpu_count()} cores; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


async def main_async(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:6]
    loads = ["start " + " ".join(f"{x:.2f}" for x in os.getloadavg())]
    cells: list[Cell] = []
    checks: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="p2e-bench-ledger-") as tmp_dir:
        tmp = Path(tmp_dir)
        nats = start_nats_server(tmp / "nats", log_file=tmp / "nats.log")
        try:
            cells += await no_ledger_cells(tmp, args.seconds, args.rounds, run_id)
            if args.sqlite:
                gateway = Gateway(tmp / "sqlite", nats.url, "", args.events, args.settings)
                found, checks["sqlite"] = await grpc_cells(
                    "sqlite", gateway, args.seconds, args.rounds, run_id
                )
                cells += found
                cells += await raw_cells("sqlite", sqlite_url(tmp / "raw.db"), args.seconds)
            if args.postgres:
                async with postgres_databases(args.postgres_admin, 2) as (served, raw):
                    gateway = Gateway(
                        tmp / "postgres", nats.url, served, args.events, args.settings
                    )
                    found, checks["postgres"] = await grpc_cells(
                        "postgres", gateway, args.seconds, args.rounds, run_id
                    )
                    cells += found
                    cells += await raw_cells("postgres", raw, args.seconds)
        finally:
            nats.stop()
    loads.append("end " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    report(cells, checks, loads)


# Set by the bench itself for each gateway it starts.
BENCH_SETTINGS = frozenset({"port", "database_url", "publish_events", "config_dir", "data_dir"})


def gateway_settings(pairs: list[str]) -> dict[str, str]:
    """`--set NAME=VALUE` pairs checked against the ledger-gateway's settings; ValueError
    names the first bad one."""
    from pydantic import ValidationError

    from p2e_ledger_gateway.config import Settings

    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lower()
        if not sep or name not in Settings.model_fields:
            raise ValueError(f"--set {pair!r}: not NAME=VALUE with NAME a ledger-gateway setting")
        if name in BENCH_SETTINGS:
            raise ValueError(f"--set {pair!r}: the bench sets {name} itself")
        try:
            Settings.model_validate({name: value})
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise ValueError(f"--set {pair!r}: {problem}") from None
        found[name] = value
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description="Ledger transfers vs their floors (gRPC, SQL).")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per cell")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="transfer cells per path at 64 clients, each between two echo cells",
    )
    parser.add_argument(
        "--no-events",
        dest="events",
        action="store_false",
        help="do not publish the outbox to NATS (publish_events=false)",
    )
    parser.add_argument("--no-sqlite", dest="sqlite", action="store_false")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--postgres-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a ledger-gateway setting for this run (P2E_LEDGER_NAME), e.g. "
        "outbox_linger_seconds=0.05; repeatable",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.sqlite and not args.postgres:
        parser.error("--no-sqlite and --no-postgres leave nothing to measure")
    try:
        args.settings = gateway_settings(args.settings)
    except ValueError as exc:
        parser.error(str(exc))
    for name, value in args.settings.items():
        print(f"ledger-gateway setting: {name}={value}")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_interruptible(main, "bench/ledger.py"))
