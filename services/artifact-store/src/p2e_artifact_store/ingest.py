"""The bus consumer: every artifact on P2E_ARTIFACTS lands in the store exactly once.

Durable pull consumer `artifact_store_index`: fetch a batch, store it in one transaction,
ack. A repeat of a known id is a no-op; a known id with other content is logged and acked
(the first one stays); an undecodable message is terminated; a store failure naks the batch
for redelivery.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from p2e_artifact_store.catalog import Catalog
from p2e_artifact_store.codec import UndecodableArtifact, decode_bus_message
from p2e_artifact_store.model import ArtifactRecord, PutOutcome
from p2e_kit.bus import ARTIFACT_STORE_INDEX, Bus, ConsumerSpec

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 1.0


class Indexer:
    """Runs the consumer as a background task; `start()` then `stop()`."""

    def __init__(
        self,
        bus: Bus,
        catalog: Catalog,
        *,
        batch: int = 256,
        fetch_timeout: float = 1.0,
        spec: ConsumerSpec = ARTIFACT_STORE_INDEX,
    ) -> None:
        self.bus = bus
        self.catalog = catalog
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.spec = spec
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.bus.ensure_consumer(self.spec)
        self._sub = await self.bus.js.pull_subscribe_bind(
            durable=self.spec.durable, stream=self.spec.stream.name
        )
        self._task = asyncio.create_task(self._run(), name="artifact-store-ingest")
        log.info("indexing %s with consumer %s", self.spec.stream.name, self.spec.durable)

    async def stop(self) -> None:
        """Finish the batch in hand (so no pull request is left open), then unsubscribe."""
        self._stopping.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.fetch_timeout + 5.0)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sub is not None:
            try:
                await self.bus.nc.flush(timeout=1)  # send pending acks
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection may already be gone
                log.debug("unsubscribe: %s", exc)
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        while not self._stopping.is_set():
            try:
                messages = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
            except TimeoutError:
                continue
            except Exception as exc:  # reconnecting, server restarting...
                log.warning("fetching artifacts failed: %s; retrying", exc)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            await self.handle(messages)

    async def handle(self, messages: list[Msg]) -> None:
        """Store one fetched batch and settle every message in it."""
        decoded: list[tuple[Msg, ArtifactRecord]] = []
        for msg in messages:
            try:
                decoded.append((msg, decode_bus_message(msg.data)))
            except UndecodableArtifact as exc:
                log.warning("terminating message %s on %s: %s", _msg_id(msg), msg.subject, exc)
                await msg.term()
        if not decoded:
            return
        try:
            results = await self.catalog.store_many([record for _, record in decoded])
        except Exception:
            log.exception("storing %d artifacts failed; they will be redelivered", len(decoded))
            for msg, _ in decoded:
                await msg.nak(delay=RETRY_DELAY_SECONDS)
            return
        for (msg, record), result in zip(decoded, results, strict=True):
            if result.outcome is PutOutcome.CONFLICT:
                log.warning(
                    "artifact %s arrived again with other content; keeping the first (seq %d)",
                    record.id,
                    result.stored.sequence,
                )
            await msg.ack()


def _msg_id(msg: Msg) -> str:
    return (msg.headers or {}).get("Nats-Msg-Id", "?")
