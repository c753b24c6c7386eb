"""Many concurrent clients over gRPC: no negative balance, conservation, one effect per request.

2000 distinct transfers from 50 concurrent clients, every fifth one also re-sent at the same
time by another client (same request_id, same parameters): between random pairs of five
agents, and in a cycle of three (each pays the next: every wallet is payer and payee of the
same hot rows). Run on SQLite and on PostgreSQL, through the transfer writer process (the
default).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

import grpc
import pytest

from p2e_kit.channels import caller_metadata, open_channel
from p2e_kit.status import decode
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2_grpc
from p2engine.ledger.v1 import ledger_service_pb2 as pb

AGENTS = [f"load{n}" for n in range(5)]
CLIENTS = 50
TRANSFERS = 2000
DUPLICATE_EVERY = 5


@dataclass(frozen=True)
class Job:
    request_id: str
    payer: str
    payee: str
    cents: int


def plan(pattern: str, seed: int = 7) -> list[list[Job]]:
    """Each client's jobs: its share of the transfers plus duplicates of its neighbour's;
    `pattern` "pairs" (random payer and payee) or "cycle" (load0 → load1 → load2 → load0)."""
    rng = random.Random(seed)
    jobs = []
    for n in range(TRANSFERS):
        if pattern == "cycle":
            payer, payee = AGENTS[n % 3], AGENTS[(n + 1) % 3]
        else:
            payer, payee = rng.sample(AGENTS, 2)
        jobs.append(Job(f"load-{n}", payer, payee, rng.randint(1, 4000)))
    queues: list[list[Job]] = [[] for _ in range(CLIENTS)]
    for n, job in enumerate(jobs):
        queues[n % CLIENTS].append(job)
        if n % DUPLICATE_EVERY == 0:
            queues[(n + 1) % CLIENTS].append(job)
    for queue in queues:
        rng.shuffle(queue)
    return queues


async def client(address: str, jobs: list[Job], answers: dict[str, list]) -> None:
    async with open_channel(address) as channel:
        stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        for job in jobs:
            request = pb.CreateTransferRequest(
                to_agent=job.payee,
                amount=f"{job.cents // 100}.{job.cents % 100:02d}",
                request_id=job.request_id,
            )
            try:
                transfer = await stub.CreateTransfer(
                    request, metadata=caller_metadata("agent", job.payer), timeout=60
                )
                answers[job.request_id].append(("SETTLED", transfer.id, transfer.replayed))
            except grpc.aio.AioRpcError as exc:
                error = decode(exc)
                replayed = error.metadata.get("replayed") == "true"
                outcome = f"{error.code}/{error.reason}"
                answers[job.request_id].append(
                    (outcome, error.metadata.get("transfer_id"), replayed)
                )


async def run_load(serve_ledger, settings, pattern: str) -> None:
    async with serve_ledger(settings) as ledger:
        await ledger.init(*AGENTS, balance="100")
        address = ledger.address
        answers: dict[str, list] = defaultdict(list)
        await asyncio.gather(*(client(address, jobs, answers) for jobs in plan(pattern)))
        await check(ledger, answers)


async def check(ledger, answers: dict[str, list]) -> None:
    assert len(answers) == TRANSFERS
    outcomes = Counter()
    for request_id, seen in answers.items():
        assert len({(o, t) for o, t, _ in seen}) == 1, (request_id, seen)  # all answers agree
        assert [r for _, _, r in seen].count(False) == 1, (request_id, seen)  # one original
        outcomes[seen[0][0]] += 1
    assert set(outcomes) <= {"SETTLED", "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"}, outcomes
    assert outcomes["SETTLED"] > TRANSFERS // 4 and outcomes["SETTLED"] < TRANSFERS

    overview = await ledger.stub.GetOverview(pb.GetOverviewRequest())
    cents = {w.agent_id: int(w.balance.amount.replace(".", "")) for w in overview.wallets}
    assert min(cents.values()) >= 0
    assert sum(cents.values()) == 100_00 * len(AGENTS)
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.total_supply == metrics.total_minted
    assert metrics.transaction_count == outcomes["SETTLED"]
    assert metrics.failed_count == TRANSFERS - outcomes["SETTLED"]

    # Replaying the history of settled transfers from the start gives today's balances.
    expected = dict.fromkeys(AGENTS, 100_00)
    for agent in AGENTS:
        token, sent = "", 0
        while True:
            page = await ledger.stub.ListTransactions(
                pb.ListTransactionsRequest(agent_id=agent, page_size=500, page_token=token)
            )
            for t in page.transfers:
                if t.status == ledger_pb2.TRANSFER_STATUS_SETTLED and t.from_agent == agent:
                    amount = int(t.amount.amount.replace(".", ""))
                    expected[agent] -= amount
                    expected[t.to_agent] += amount
                    sent += 1
            token = page.next_page_token
            if not token:
                break
    assert expected == cents
    audit = await ledger.stub.VerifyAudit(pb.VerifyAuditRequest())
    assert (audit.valid, audit.checked) == (True, len(AGENTS) + TRANSFERS)


PATTERNS = pytest.mark.parametrize("pattern", ["pairs", "cycle"])


@PATTERNS
async def test_concurrent_transfers_sqlite(
    make_settings, sqlite_url, serve_ledger, pattern: str
) -> None:
    await run_load(serve_ledger, make_settings(sqlite_url, transfer_writer="process"), pattern)


@pytest.mark.postgres
@PATTERNS
async def test_concurrent_transfers_postgres(
    make_settings, postgres_url, serve_ledger, pattern: str
) -> None:
    await run_load(serve_ledger, make_settings(postgres_url, transfer_writer="process"), pattern)
