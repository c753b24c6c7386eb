"""`TransferBatcher` against a fake batch writer (no database).

Requests that arrive while a batch is written go together in the next one (at most
`max_batch`), and under load the next batch waits while requests keep coming (never for a
lone caller); each caller gets its own outcome; a batch the database refuses is written
again one request at a time, unless the error is the service's own (then all get it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from p2e_kit.errors import DependencyUnavailable, NotFound
from p2e_ledger_gateway.batcher import Outcome, TransferBatcher
from p2e_ledger_gateway.policy import NO_POLICY
from p2e_ledger_gateway.records import Status, TransferRecord
from p2e_ledger_gateway.transfers import Item, TransferRequest

Failure = Callable[[list[str]], Exception | None]


def item(rid: str, payee: str = "b") -> Item:
    return TransferRequest("a", payee, 1, "", rid, "agent:a"), NO_POLICY


def settled(request: TransferRequest) -> TransferRecord:
    return TransferRecord(
        id=f"tr-{request.request_id}",
        request_id=request.request_id,
        from_agent=request.from_agent,
        to_agent=request.to_agent,
        amount=request.amount,
        reason=request.reason,
        status=Status.SETTLED,
        failure_reason="",
        failure_detail="",
        initiated_by=request.initiated_by,
        conversation_id="",
        create_time=0,
    )


class FakeWrite:
    """Records the request ids of each batch, waits for `gate`, then raises what `fail` gives
    for the batch or answers each item: NotFound for the payee "ghost", else a settlement."""

    def __init__(self, fail: Failure = lambda rids: None) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail

    async def __call__(self, items: Sequence[Item]) -> list[Outcome]:
        rids = [request.request_id for request, _ in items]
        self.batches.append(rids)
        await self.gate.wait()
        error = self.fail(rids)
        if error is not None:
            raise error
        return [
            NotFound("no wallet", reason="WALLET_NOT_FOUND")
            if r.to_agent == "ghost"
            else settled(r)
            for r, _ in items
        ]


async def spin() -> None:
    """Let every ready task run until it waits on something."""
    for _ in range(5):
        await asyncio.sleep(0)


async def hold_first(batcher: TransferBatcher, fake: FakeWrite) -> asyncio.Task[Outcome]:
    """Submit "r0" and keep its batch in flight until `fake.gate` is set."""
    fake.gate.clear()
    first = asyncio.create_task(batcher.submit(item("r0")))
    await spin()
    assert fake.batches == [["r0"]]
    return first


def submit_all(batcher: TransferBatcher, *items: Item) -> list[asyncio.Task[Outcome]]:
    return [asyncio.create_task(batcher.submit(i)) for i in items]


def rid_of(outcome: Outcome | BaseException) -> str:
    assert isinstance(outcome, TransferRecord), outcome
    return outcome.request_id


async def test_a_lone_request_is_written_at_once() -> None:
    fake = FakeWrite()
    batcher = TransferBatcher(fake)
    assert rid_of(await batcher.submit(item("r0"))) == "r0"
    assert rid_of(await batcher.submit(item("r1"))) == "r1"
    assert fake.batches == [["r0"], ["r1"]]
    await batcher.close()


async def test_requests_arriving_during_a_batch_go_together_to_their_callers() -> None:
    fake = FakeWrite()
    batcher = TransferBatcher(fake)
    first = await hold_first(batcher, fake)
    tasks = submit_all(batcher, item("r1"), item("r2", payee="ghost"), item("r3"), item("r4"))
    await spin()
    assert fake.batches == [["r0"]]  # nothing written while the first batch is in flight
    fake.gate.set()
    assert rid_of(await first) == "r0"
    outcomes = await asyncio.gather(*tasks)
    assert fake.batches == [["r0"], ["r1", "r2", "r3", "r4"]]
    assert isinstance(outcomes[1], NotFound)  # returned in its place, not raised
    assert [rid_of(o) for i, o in enumerate(outcomes) if i != 1] == ["r1", "r3", "r4"]
    assert (batcher.batches, batcher.transfers) == (2, 5)  # the refused request included
    await batcher.close()


async def test_max_batch_is_respected() -> None:
    fake = FakeWrite()
    batcher = TransferBatcher(fake, max_batch=2)
    first = await hold_first(batcher, fake)
    tasks = submit_all(batcher, *(item(f"r{n}") for n in range(1, 6)))
    await spin()
    fake.gate.set()
    outcomes = await asyncio.gather(first, *tasks)
    assert [rid_of(o) for o in outcomes] == [f"r{n}" for n in range(6)]
    assert fake.batches == [["r0"], ["r1", "r2"], ["r3", "r4"], ["r5"]]
    await batcher.close()


def poisoned(rids: list[str]) -> Exception | None:
    return RuntimeError("UNIQUE constraint failed") if "poison" in rids else None


async def test_a_refused_batch_is_written_again_one_by_one() -> None:
    fake = FakeWrite(poisoned)
    batcher = TransferBatcher(fake)
    first = await hold_first(batcher, fake)
    items = (item("r1"), item("poison"), item("r2", payee="ghost"), item("r3"))
    tasks = submit_all(batcher, *items)
    await spin()
    fake.gate.set()
    outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
    rids = ["r1", "poison", "r2", "r3"]
    assert fake.batches == [["r0"], rids, *([rid] for rid in rids)]  # then one by one, in order
    assert isinstance(outcomes[2], RuntimeError)  # only the one that fails alone
    assert isinstance(outcomes[3], NotFound)
    assert [rid_of(outcomes[n]) for n in (0, 1, 4)] == ["r0", "r1", "r3"]
    # Written: the first batch and three of the four alone; the failed ones are not counted.
    assert (batcher.batches, batcher.transfers) == (4, 4)
    await batcher.close()


async def test_the_services_own_error_reaches_every_caller_without_retries() -> None:
    down = DependencyUnavailable("the ledger database is unavailable")
    fake = FakeWrite(lambda rids: down if len(rids) > 1 or rids == ["alone"] else None)
    batcher = TransferBatcher(fake)
    first = await hold_first(batcher, fake)
    tasks = submit_all(batcher, item("r1"), item("r2"), item("r3"))
    await spin()
    fake.gate.set()
    assert rid_of(await first) == "r0"
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes == [down] * 3
    assert fake.batches == [["r0"], ["r1", "r2", "r3"]]
    with pytest.raises(DependencyUnavailable):
        await batcher.submit(item("alone"))
    assert (batcher.batches, batcher.transfers) == (1, 1)
    await batcher.close()


async def test_a_cancelled_caller_does_not_break_the_others() -> None:
    fake = FakeWrite(poisoned)
    batcher = TransferBatcher(fake)
    first = await hold_first(batcher, fake)
    tasks = submit_all(batcher, item("r1"), item("r2"), item("poison"), item("r3"))
    await spin()
    for gone in (first, tasks[1], tasks[2]):  # one in flight, two queued (one that fails)
        gone.cancel()
    fake.gate.set()
    outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert all(isinstance(outcomes[n], asyncio.CancelledError) for n in (0, 2, 3))
    assert [rid_of(outcomes[n]) for n in (1, 4)] == ["r1", "r3"]
    # What was queued is still written (its transfer may be recorded), and the batcher goes on.
    assert rid_of(await batcher.submit(item("r4"))) == "r4"
    rids = ["r1", "r2", "poison", "r3"]
    assert fake.batches == [["r0"], rids, *([rid] for rid in rids), ["r4"]]
    await batcher.close()


async def test_a_lone_caller_never_waits_to_gather() -> None:
    fake = FakeWrite()
    batcher = TransferBatcher(fake, gather_seconds=60, gather_step_seconds=60)
    async with asyncio.timeout(5):  # a gathering wait would be a minute
        for n in range(3):
            assert rid_of(await batcher.submit(item(f"r{n}"))) == f"r{n}"
    assert fake.batches == [["r0"], ["r1"], ["r2"]]
    await batcher.close()


async def test_under_load_the_next_batch_gathers_while_requests_keep_arriving() -> None:
    fake = FakeWrite()
    step = 0.2  # generous: each arrival below comes well within a step of the previous one
    batcher = TransferBatcher(fake, gather_seconds=60, gather_step_seconds=step)
    fake.gate.clear()
    first = submit_all(batcher, item("r0"), item("r1"))
    await spin()
    assert fake.batches == [["r0", "r1"]]  # in flight, with company: the next one gathers
    arrivals = submit_all(batcher, item("r2"))
    async with asyncio.timeout(30):
        fake.gate.set()
        for n in range(3, 6):
            await asyncio.sleep(step / 4)
            arrivals += submit_all(batcher, item(f"r{n}"))
        outcomes = await asyncio.gather(*first, *arrivals)
    assert [rid_of(o) for o in outcomes] == [f"r{n}" for n in range(6)]
    # r3..r5 arrived while gathering: one batch with r2, written once arrivals stopped.
    assert fake.batches == [["r0", "r1"], ["r2", "r3", "r4", "r5"]]
    await batcher.close()


async def test_gathering_stops_at_max_batch() -> None:
    fake = FakeWrite()
    batcher = TransferBatcher(fake, max_batch=3, gather_seconds=60, gather_step_seconds=60)
    fake.gate.clear()
    first = submit_all(batcher, item("r0"), item("r1"))
    await spin()
    more = submit_all(batcher, *(item(f"r{n}") for n in range(2, 8)))
    async with asyncio.timeout(5):  # full batches go without waiting for a (minute-long) step
        fake.gate.set()
        outcomes = await asyncio.gather(*first, *more)
    assert [rid_of(o) for o in outcomes] == [f"r{n}" for n in range(8)]
    assert fake.batches == [["r0", "r1"], ["r2", "r3", "r4"], ["r5", "r6", "r7"]]
    await batcher.close()
