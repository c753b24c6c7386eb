"""SQL storage of evaluations (SQLAlchemy 2 Core, async)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = sa.MetaData()

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(200), nullable=True, unique=True),
    sa.Column("evaluator_id", sa.String(100), nullable=False),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("branch_id", sa.String(200), nullable=False, default=""),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("rationale", sa.Text, nullable=False, default=""),
    sa.Column("judge_model", sa.String(200), nullable=False),
    sa.Column("rubric", sa.Text, nullable=False, default=""),
    sa.Column("head_artifact_id", sa.String(200), nullable=False, default=""),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
)


@dataclass(frozen=True)
class EvaluationRecord:
    id: str
    evaluator_id: str
    conversation_id: str
    branch_id: str
    score: float
    metrics: dict[str, float]
    rationale: str
    judge_model: str
    rubric: str
    create_time: datetime
    request_id: str = ""
    head_artifact_id: str = ""  # the last state judged (the evaluation artifact's parent)
    published: bool = field(default=False, compare=False)


def _from_row(row: Any) -> EvaluationRecord:
    created = row.create_time if row.create_time.tzinfo else row.create_time.replace(tzinfo=UTC)
    return EvaluationRecord(
        id=row.id,
        evaluator_id=row.evaluator_id,
        conversation_id=row.conversation_id,
        branch_id=row.branch_id,
        score=row.score,
        metrics=dict(row.metrics),
        rationale=row.rationale,
        judge_model=row.judge_model,
        rubric=row.rubric,
        create_time=created,
        request_id=row.request_id or "",
        head_artifact_id=row.head_artifact_id,
        published=row.published,
    )


class EvaluationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def insert(self, record: EvaluationRecord) -> EvaluationRecord:
        """Store a new evaluation; with a request_id already used, return the first one."""
        values = asdict(record)
        values["request_id"] = record.request_id or None
        try:
            async with self.engine.begin() as conn:
                await conn.execute(evaluations.insert().values(**values))
        except IntegrityError:
            existing = await self.by_request_id(record.request_id) if record.request_id else None
            if existing is None:
                raise
            return existing
        return record

    async def _one(self, where: sa.ColumnElement[bool]) -> EvaluationRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(evaluations).where(where))).first()
        return _from_row(row) if row is not None else None

    async def get(self, evaluation_id: str) -> EvaluationRecord | None:
        return await self._one(evaluations.c.id == evaluation_id)

    async def by_request_id(self, request_id: str) -> EvaluationRecord | None:
        return await self._one(evaluations.c.request_id == request_id)

    async def unpublished(self, limit: int = 100) -> list[EvaluationRecord]:
        stmt = (
            sa.select(evaluations)
            .where(evaluations.c.published.is_(False))
            .order_by(evaluations.c.create_time)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_from_row(row) for row in await conn.execute(stmt)]

    async def mark_published(self, evaluation_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                evaluations.update().where(evaluations.c.id == evaluation_id).values(published=True)
            )
