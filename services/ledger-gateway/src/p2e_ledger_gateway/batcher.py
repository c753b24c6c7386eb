"""Transfer requests that arrive while a batch is being written go together in the next one.

Under load (the last batch had more than one request) the next batch is gathered a little
longer, while requests keep arriving (`_gather`), so that more transfers share a batch's
fixed cost; a lone caller never waits.

One `transfers.create_many` per batch, in one write transaction: the wallets, the recorded
request ids and the payers' spending are read once for the whole batch and its rows written
with a few statements, instead of a dozen statements (and on PostgreSQL as many round trips)
per transfer. Batches run one at a time, so a lone request is written at once and under load
each batch takes everything that queued meanwhile (at most `max_batch`).

`batches` and `transfers` count what was written (a batch that failed and was written again
one by one counts as that many batches of one): their ratio, the mean batch, tells how much
of a batch's fixed cost the load shares (`GetDebugInfo`, `p2engine ledger debug`).

If the batch's transaction fails for a reason that is not retried (`Database.write` retries
lock contention, deadlocks, serialization failures and lost unique races) and is not the
service's own error (the database unreachable: every request gets that), its requests are
written again one by one, so one request the database refuses cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from p2e_kit.errors import P2EError
from p2e_ledger_gateway.records import TransferRecord
from p2e_ledger_gateway.transfers import Item

log = logging.getLogger(__name__)

MAX_BATCH = 256
GATHER_SECONDS = 0.002  # at most this long gathering a batch under load
GATHER_STEP_SECONDS = 0.001  # ... while requests keep arriving at least this often

Outcome = TransferRecord | P2EError
WriteBatch = Callable[[Sequence[Item]], Awaitable[list[Outcome]]]


class TransferBatcher:
    def __init__(
        self,
        write: WriteBatch,
        *,
        max_batch: int = MAX_BATCH,
        gather_seconds: float = GATHER_SECONDS,
        gather_step_seconds: float = GATHER_STEP_SECONDS,
    ) -> None:
        self._write = write
        self.max_batch = max_batch
        self.gather_seconds = gather_seconds
        self.gather_step_seconds = gather_step_seconds
        self._queue: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches written since start-up
        self.transfers = 0  # requests in them (replays and refusals included)

    async def submit(self, item: Item) -> Outcome:
        """The outcome of `item` (an error it must raise is returned, not raised)."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="ledger-transfer-batches")
        return await future

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drain(self) -> None:
        loaded = False
        while self._queue:
            if loaded:
                await self._gather()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            loaded = len(batch) > 1
            await self._run([item for item, _ in batch], [future for _, future in batch])

    async def _gather(self) -> None:
        """Under load (the last batch had company), wait while requests keep arriving, up to
        `gather_seconds`: a batch's fixed cost (its transaction, the wallets' and request ids'
        reads, the commit) is then shared by more transfers. A lone caller never waits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_seconds
        seen = len(self._queue)
        while seen < self.max_batch and loop.time() < deadline:
            await asyncio.sleep(self.gather_step_seconds)
            if len(self._queue) == seen:
                return
            seen = len(self._queue)

    async def _run(self, items: list[Item], futures: list[asyncio.Future[Outcome]]) -> None:
        try:
            outcomes = await self._write(items)
        except Exception as exc:
            if len(items) == 1 or isinstance(exc, P2EError):  # e.g. the database is down
                for future in futures:
                    _settle(future, error=exc)
                return
            log.warning(
                "a batch of %d transfers failed (%s); writing them one by one", len(items), exc
            )
            for item, future in zip(items, futures, strict=True):
                await self._run([item], [future])
            return
        self.batches += 1
        self.transfers += len(items)
        for future, outcome in zip(futures, outcomes, strict=True):
            _settle(future, outcome=outcome)


def _settle(
    future: asyncio.Future[Outcome],
    *,
    outcome: Outcome | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # the caller went away (its transfer may still have been recorded)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)  # type: ignore[arg-type]
