"""The artifact catalog: what every RPC and the bus consumer do, over the store.

Plain async Python; no grpc here. Errors are kit P2EErrors.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from p2e_artifact_store import paging
from p2e_artifact_store.model import (
    INLINE_LIMIT_BYTES,
    ArtifactRecord,
    PutOutcome,
    PutResult,
    prepare,
)
from p2e_artifact_store.notify import Notifier
from p2e_artifact_store.store import ArtifactStore, Query
from p2e_kit.errors import AlreadyExists, InvalidArgument, NotFound
from p2e_kit.ids import new_id

log = logging.getLogger(__name__)

DEFAULT_LINEAGE_DEPTH = 10
MAX_LINEAGE_DEPTH = 100
SCAN_BATCH = 500


@dataclass(frozen=True)
class Page:
    artifacts: list[ArtifactRecord]
    next_page_token: str
    total_size: int


@dataclass(frozen=True)
class CatalogLimits:
    inline_limit_bytes: int = INLINE_LIMIT_BYTES
    max_artifact_bytes: int = 8 * 1024 * 1024
    watch_poll_seconds: float = 2.0


class Catalog:
    def __init__(
        self, store: ArtifactStore, notifier: Notifier, limits: CatalogLimits | None = None
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.limits = limits or CatalogLimits()

    # -- writing -------------------------------------------------------------------------

    async def store_many(self, records: Sequence[ArtifactRecord]) -> list[PutResult]:
        """Store artifacts idempotently (the bus consumer's path); wake watchers on new rows."""
        prepared = [prepare(r, inline_limit=self.limits.inline_limit_bytes) for r in records]
        results = await self.store.put_many(prepared)
        if any(result.outcome is PutOutcome.CREATED for result in results):
            self.notifier.notify()
        return results

    async def put(self, header: ArtifactRecord, chunks: AsyncIterator[bytes]) -> ArtifactRecord:
        """PutArtifact: header plus payload chunks; a repeat returns the stored artifact."""
        if not header.kind:
            raise InvalidArgument("header.kind is required", field="header.kind")
        if header.blob_ref:
            raise InvalidArgument("blob_ref is set by the store", field="header.blob_ref")
        payload = await self._collect(header.payload, chunks)
        if header.size_bytes and header.size_bytes != len(payload):
            raise InvalidArgument(
                f"header.size_bytes is {header.size_bytes} but {len(payload)} bytes arrived",
                field="header.size_bytes",
            )
        record = replace(
            header,
            id=header.id or new_id("art"),
            conversation_id=header.conversation_id or "system",
            payload=payload,
            sequence=0,
        )
        (result,) = await self.store_many([record])
        if result.outcome is PutOutcome.CONFLICT:
            raise AlreadyExists(f"artifact {record.id} exists with other content")
        return await self.get(result.stored.id)

    async def _collect(self, first: bytes, chunks: AsyncIterator[bytes]) -> bytes:
        parts, size = [first], len(first)
        async for chunk in chunks:
            size += len(chunk)
            if size > self.limits.max_artifact_bytes:
                raise InvalidArgument(
                    f"payload exceeds {self.limits.max_artifact_bytes} bytes", field="chunk"
                )
            parts.append(chunk)
        return b"".join(parts)

    # -- reading -------------------------------------------------------------------------

    async def get(self, artifact_id: str) -> ArtifactRecord:
        """One artifact with its full payload (loaded from the blob store when large)."""
        if not artifact_id:
            raise InvalidArgument("id is required", field="id")
        record = await self.store.get(artifact_id)
        if record is None:
            raise NotFound(f"artifact {artifact_id} not found", reason="ARTIFACT_NOT_FOUND")
        return await self.with_blob(record)

    async def with_blob(self, record: ArtifactRecord) -> ArtifactRecord:
        if not record.blob_ref or record.payload:
            return record
        data = await self.store.blob(record.blob_ref)
        return replace(record, payload=data) if data is not None else record

    async def list_page(
        self,
        *,
        conversation_id: str = "",
        kind: str = "",
        page_size: int = 0,
        page_token: str = "",
        newest_first: bool = False,
    ) -> Page:
        """One page of matching artifacts; blob-backed ones come without their payload."""
        size = paging.page_size(page_size)
        cursor = paging.decode(
            page_token, conversation_id=conversation_id, kind=kind, newest_first=newest_first
        )
        start = cursor.sequence if cursor else 0
        query = Query(
            conversation_id=conversation_id,
            kind=kind,
            after_sequence=0 if newest_first else start,
            before_sequence=start if newest_first else 0,
            newest_first=newest_first,
        )
        rows = await self.store.query(query, size + 1)
        total = await self.store.count(query)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = paging.Cursor(rows[-1].sequence, newest_first)
            token = paging.encode(last, conversation_id=conversation_id, kind=kind)
        return Page(rows, token, total)

    async def lineage(self, artifact_id: str, depth: int = 0) -> list[ArtifactRecord]:
        """The artifact, then its parents and causes generation by generation, nearest first."""
        if depth < 0:
            raise InvalidArgument("depth must not be negative", field="depth")
        depth = min(depth or DEFAULT_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH)
        start = await self.store.get(artifact_id)
        if start is None:
            raise NotFound(f"artifact {artifact_id} not found", reason="ARTIFACT_NOT_FOUND")
        found, seen, generation = [start], {start.id}, [start]
        for _ in range(depth):
            wanted = [i for r in generation for i in _sources(r) if i not in seen]
            wanted = list(dict.fromkeys(wanted))
            loaded = await self.store.get_many(wanted)
            generation = [loaded[i] for i in wanted if i in loaded]
            if not generation:
                break
            seen.update(r.id for r in generation)
            found.extend(generation)
        return found

    async def watch(
        self, *, conversation_id: str = "", after_sequence: int = 0
    ) -> AsyncIterator[ArtifactRecord]:
        """Stored artifacts after `after_sequence`, then live ones as they land (never ends)."""
        if after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", field="after_sequence")
        cursor = after_sequence
        while True:
            version = self.notifier.version
            batch = await self.store.query(
                Query(conversation_id=conversation_id, after_sequence=cursor), SCAN_BATCH
            )
            for record in batch:
                cursor = record.sequence
                yield record
            if len(batch) < SCAN_BATCH:
                # Caught up: sleep until a row lands here (or poll, for other writers).
                await self.notifier.wait(version, self.limits.watch_poll_seconds)

    async def export(
        self, *, conversation_id: str = "", kind: str = ""
    ) -> AsyncIterator[ArtifactRecord]:
        """Every matching artifact, oldest first, with full payloads."""
        cursor = 0
        while True:
            query = Query(conversation_id=conversation_id, kind=kind, after_sequence=cursor)
            batch = await self.store.query(query, SCAN_BATCH)
            for record in batch:
                cursor = record.sequence
                yield await self.with_blob(record)
            if len(batch) < SCAN_BATCH:
                return


def _sources(record: ArtifactRecord) -> list[str]:
    sources = list(record.parent_ids)
    if record.causation_id:
        sources.append(record.causation_id)
    return sources
