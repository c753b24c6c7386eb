"""The `executions` table: one row per finished call, keyed by call_id.

It makes execution idempotent (JetStream delivers at least once: a redelivered call_id gets
the stored result instead of running its side effects again) and backs the per-conversation
duplicate detection of side-effecting tools.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

metadata = MetaData()

executions = Table(
    "executions",
    metadata,
    Column("call_id", String(255), primary_key=True),
    Column("tool", String(64), nullable=False),
    Column("args", Text, nullable=False),
    Column("agent", String(255), nullable=False),
    Column("conversation", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("result", Text, nullable=False),
    Column("error_code", String(64), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("cached", Boolean, nullable=False),
    Column("duplicate_of", String(255), nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_executions_conversation_tool", "conversation", "tool", "agent"),
)


@dataclass(frozen=True)
class ExecutionRecord:
    """A finished call as stored."""

    call_id: str
    tool: str
    args: str
    agent: str
    conversation: str
    status: str
    result: str = ""
    error_code: str = ""
    error_message: str = ""
    cached: bool = False
    duplicate_of: str = ""
    duration_ms: int = 0
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class ExecutionStore:
    """Small async functions over the executions table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_tables(self) -> None:
        async with self._engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def get(self, call_id: str) -> ExecutionRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(executions).where(executions.c.call_id == call_id))
            ).first()
        return ExecutionRecord(**row._mapping) if row is not None else None

    async def save(self, record: ExecutionRecord) -> ExecutionRecord:
        """Insert `record`, or return the row already stored under its call_id (first wins)."""
        values = asdict(record)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(executions).values(**values))
        except IntegrityError:
            existing = await self.get(record.call_id)
            if existing is None:
                raise
            log.info("call %s was already stored by another execution", record.call_id)
            return existing
        return record

    async def find_duplicate(
        self, *, conversation: str, agent: str, tool: str, args: str, exclude_call_id: str
    ) -> str | None:
        """The call_id of an earlier successful identical call in the conversation, if any."""
        query = (
            select(executions.c.call_id)
            .where(
                executions.c.conversation == conversation,
                executions.c.agent == agent,
                executions.c.tool == tool,
                executions.c.args == args,
                executions.c.status == "OK",
                executions.c.call_id != exclude_call_id,
            )
            .order_by(executions.c.created)
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()
