"""What the orchestrator publishes: every appended state as an artifacts.v1.Artifact on
`p2e.artifacts.<conversation>.<kind>` (Nats-Msg-Id = state id), and a TurnCompleted on
`p2e.orchestrator.turn_finished.<conversation>` for each finished state.

States are written to the database first; a state whose publication fails stays
`published = false` (the outbox) and a background task retries it. Published states are
marked in batches off the append path: a mark lost to a crash only means the outbox
publishes the state again, under the same msg id (dropped by the stream's duplicate window).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Protocol

import nats.errors
from google.protobuf.json_format import MessageToJson

from p2e_kit.bus import Bus, artifact_subject, turn_finished_subject
from p2e_orchestrator import convert
from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.orchestrator.v1 import events_pb2

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
OUTBOX_BATCH = 200
MARK_LINGER_SECONDS = 0.2  # published states gather this long into one "published" mark
PUBLISH_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class StatePublisher(Protocol):
    async def publish(self, state: r.State) -> None:
        """Publish a stored state; must not raise on a bus failure (the outbox retries)."""
        ...


def state_to_artifact(state: r.State, *, produced_by: str) -> artifacts_pb2.Artifact:
    payload = MessageToJson(convert.state(state)).encode()
    return artifacts_pb2.Artifact(
        id=state.id,
        kind=state.kind,
        conversation_id=state.conversation_id,
        branch_id=state.branch_id,
        agent_id=state.agent_id,
        produced_by=produced_by,
        parent_ids=[state.parent_id] if state.parent_id else [],
        causation_id=state.call_id if state.call_id != state.id else "",
        create_time=convert.timestamp(state.created),
        content_type=CONTENT_TYPE,
        payload=payload,
        size_bytes=len(payload),
        state_seq=state.seq,
    )


def turn_completed(state: r.State) -> events_pb2.TurnCompleted:
    return events_pb2.TurnCompleted(
        conversation_id=state.conversation_id,
        branch_id=state.branch_id,
        agent_id=state.agent_id,
        text=state.text,
    )


class ArtifactPublisher:
    """Publishes states on the artifact bus, with a database outbox for failed publications."""

    def __init__(
        self, bus: Bus, store: Store, *, produced_by: str, retry_interval: float = 2.0
    ) -> None:
        self._bus = bus
        self._store = store
        self._produced_by = produced_by
        self._interval = retry_interval
        # Well inside the outbox's age cutoff, so it does not republish states being marked.
        self._linger = min(MARK_LINGER_SECONDS, retry_interval / 4)
        self._to_mark: list[str] = []
        self._marker: asyncio.Task[None] | None = None

    async def _send(self, state: r.State) -> None:
        artifact = state_to_artifact(state, produced_by=self._produced_by)
        await self._bus.publish(
            artifact_subject(state.conversation_id, state.kind), artifact, msg_id=state.id
        )
        if state.kind == r.FINISHED:
            await self._bus.publish(
                turn_finished_subject(state.conversation_id), turn_completed(state), state.id
            )

    async def publish(self, state: r.State) -> None:
        try:
            await self._send(state)
        except PUBLISH_ERRORS as exc:
            log.warning("artifact %s not published yet (%r); the outbox will retry", state.id, exc)
            return
        self._to_mark.append(state.id)
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark(), name="mark-published")

    async def _mark(self) -> None:
        """Mark what was published meanwhile, one transaction per batch."""
        while self._to_mark:
            await asyncio.sleep(self._linger)
            batch, self._to_mark = self._to_mark, []
            try:
                await self._store.mark_published(batch)
            except Exception as exc:  # the outbox publishes them again
                log.warning("could not mark %d artifacts published: %r", len(batch), exc)

    async def close(self) -> None:
        """Write the marks still pending (skipping the linger)."""
        self._linger = 0.0
        if self._marker is not None:
            await asyncio.wait([self._marker])

    async def flush(self, *, min_age_seconds: float = 0.0) -> int:
        """Publish outbox states older than `min_age_seconds`; returns how many went out."""
        cutoff = r.utcnow() - timedelta(seconds=min_age_seconds)
        pending = await self._store.unpublished_states(created_before=cutoff, limit=OUTBOX_BATCH)
        sent: list[str] = []
        for state in pending:
            try:
                await self._send(state)
            except PUBLISH_ERRORS as exc:
                log.warning(
                    "outbox: %d artifacts still unpublished (%r)", len(pending) - len(sent), exc
                )
                break
            sent.append(state.id)
        await self._store.mark_published(sent)
        return len(sent)

    async def run_outbox(self) -> None:
        """Retry unpublished states forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                sent = await self.flush(min_age_seconds=self._interval)
            except Exception:
                log.exception("outbox pass failed; retrying")
                continue
            if sent:
                log.info("outbox: published %d delayed artifacts", sent)
