"""The orchestrator's database: SQLAlchemy 2 Core over the kit's async engine."""

from __future__ import annotations

from p2e_orchestrator.storage.conversations import ConversationStore
from p2e_orchestrator.storage.stack import StackStore
from p2e_orchestrator.storage.tables import metadata


class Store(ConversationStore, StackStore):
    """Conversations, branches, states, effects and idempotency keys in one database."""

    async def create_all(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)


__all__ = ["Store"]
