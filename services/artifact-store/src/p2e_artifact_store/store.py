"""SQL storage of artifacts and blobs (SQLAlchemy 2 Core, async).

`sequence` is the store's own position: an autoincrement key, so readers can resume
("everything after N") and pages stay stable while rows keep arriving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from p2e_artifact_store.model import (
    ArtifactRecord,
    PreparedBlob,
    PutOutcome,
    PutResult,
    blob_sha_of,
)

log = logging.getLogger(__name__)

metadata = sa.MetaData()

_SEQUENCE_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # rowid alias on SQLite

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("sequence", _SEQUENCE_TYPE, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("conversation_id", sa.String(200), nullable=False),
    sa.Column("branch_id", sa.String(200), nullable=False, default=""),
    sa.Column("agent_id", sa.String(200), nullable=False, default=""),
    sa.Column("produced_by", sa.String(100), nullable=False, default=""),
    sa.Column("parent_ids", sa.JSON, nullable=False, default=list),
    sa.Column("causation_id", sa.String(200), nullable=False, default=""),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False, default=""),
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Column("blob_ref", sa.String(100), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("state_seq", sa.BigInteger, nullable=False, default=0),
    sa.Index("ix_artifacts_conversation_sequence", "conversation_id", "sequence"),
    sa.Index("ix_artifacts_kind", "kind"),
    sqlite_autoincrement=True,
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


@dataclass(frozen=True)
class Query:
    """Which artifacts, in which order, from where."""

    conversation_id: str = ""
    kind: str = ""
    after_sequence: int = 0  # oldest-first: sequence > this
    before_sequence: int = 0  # newest-first: sequence < this (0: no bound)
    newest_first: bool = False


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _from_row(row: Any) -> ArtifactRecord:
    return ArtifactRecord(
        id=row.id,
        kind=row.kind,
        conversation_id=row.conversation_id,
        branch_id=row.branch_id,
        agent_id=row.agent_id,
        produced_by=row.produced_by,
        parent_ids=tuple(row.parent_ids or ()),
        causation_id=row.causation_id,
        create_time=_utc(row.create_time),
        content_type=row.content_type,
        payload=row.payload or b"",
        blob_ref=row.blob_ref or "",
        size_bytes=row.size_bytes,
        sequence=row.sequence,
        state_seq=row.state_seq,
        digest=row.digest,
    )


def _to_row(record: ArtifactRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "conversation_id": record.conversation_id,
        "branch_id": record.branch_id,
        "agent_id": record.agent_id,
        "produced_by": record.produced_by,
        "parent_ids": list(record.parent_ids),
        "causation_id": record.causation_id,
        "create_time": record.create_time,
        "content_type": record.content_type,
        "payload": None if record.blob_ref else record.payload,
        "blob_ref": record.blob_ref or None,
        "size_bytes": record.size_bytes,
        "digest": record.digest,
        "state_seq": record.state_seq,
    }


def _where(query: Query) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    if query.conversation_id:
        clauses.append(artifacts.c.conversation_id == query.conversation_id)
    if query.kind:
        clauses.append(artifacts.c.kind == query.kind)
    return clauses


class ArtifactStore:
    """Small async functions over the two tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def put_many(
        self, items: Sequence[tuple[ArtifactRecord, PreparedBlob | None]]
    ) -> list[PutResult]:
        """Store prepared artifacts in one transaction; a known id is never written twice."""
        try:
            return await self._put_many_once(items)
        except IntegrityError:
            # Another writer inserted one of these ids between our read and our write.
            return await self._put_many_once(items)

    async def _put_many_once(
        self, items: Sequence[tuple[ArtifactRecord, PreparedBlob | None]]
    ) -> list[PutResult]:
        async with self.engine.begin() as conn:
            ids = list({record.id for record, _ in items})
            known = await self._load(conn, artifacts.c.id.in_(ids)) if ids else []
            by_id = {record.id: record for record in known}
            results: list[PutResult] = []
            for record, blob in items:
                existing = by_id.get(record.id)
                if existing is not None:
                    same = existing.content_key() == record.content_key()
                    outcome = PutOutcome.DUPLICATE if same else PutOutcome.CONFLICT
                    results.append(PutResult(outcome, existing))
                    continue
                if blob is not None:
                    await self._put_blob(conn, blob)
                stored = await self._insert(conn, record)
                by_id[record.id] = stored
                results.append(PutResult(PutOutcome.CREATED, stored))
            return results

    async def _insert(self, conn: AsyncConnection, record: ArtifactRecord) -> ArtifactRecord:
        result = await conn.execute(artifacts.insert().values(**_to_row(record)))
        (sequence,) = result.inserted_primary_key or (0,)
        return replace(record, sequence=int(sequence))

    async def _put_blob(self, conn: AsyncConnection, blob: PreparedBlob) -> None:
        found = await conn.scalar(sa.select(blobs.c.sha256).where(blobs.c.sha256 == blob.sha256))
        if found is None:
            await conn.execute(blobs.insert().values(sha256=blob.sha256, data=blob.data))

    async def _load(
        self, conn: AsyncConnection, *where: sa.ColumnElement[bool]
    ) -> list[ArtifactRecord]:
        rows = await conn.execute(sa.select(artifacts).where(*where))
        return [_from_row(row) for row in rows]

    async def get(self, artifact_id: str) -> ArtifactRecord | None:
        async with self.engine.connect() as conn:
            found = await self._load(conn, artifacts.c.id == artifact_id)
        return found[0] if found else None

    async def get_many(self, ids: Sequence[str]) -> dict[str, ArtifactRecord]:
        if not ids:
            return {}
        async with self.engine.connect() as conn:
            found = await self._load(conn, artifacts.c.id.in_(list(set(ids))))
        return {record.id: record for record in found}

    async def blob(self, ref: str) -> bytes | None:
        sha = blob_sha_of(ref)
        async with self.engine.connect() as conn:
            return await conn.scalar(sa.select(blobs.c.data).where(blobs.c.sha256 == sha))

    async def query(self, query: Query, limit: int) -> list[ArtifactRecord]:
        clauses = _where(query)
        order = artifacts.c.sequence
        if query.newest_first:
            if query.before_sequence:
                clauses.append(artifacts.c.sequence < query.before_sequence)
            ordered = order.desc()
        else:
            if query.after_sequence:
                clauses.append(artifacts.c.sequence > query.after_sequence)
            ordered = order.asc()
        stmt = sa.select(artifacts).where(*clauses).order_by(ordered).limit(limit)
        async with self.engine.connect() as conn:
            rows = await conn.execute(stmt)
            return [_from_row(row) for row in rows]

    async def count(self, query: Query) -> int:
        stmt = sa.select(sa.func.count()).select_from(artifacts).where(*_where(query))
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)
