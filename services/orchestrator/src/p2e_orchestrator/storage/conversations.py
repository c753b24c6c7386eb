"""Conversations, branches and idempotency keys."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import AlreadyExists, FailedPrecondition, NotFound
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.storage.base import ShieldedStore, shielded
from p2e_orchestrator.storage.tables import branches, conversations, request_ids, states


def _conversation(row: Any) -> r.Conversation:
    return r.Conversation(
        id=row.id,
        name=row.name,
        agent_id=row.agent_id,
        active_branch_id=row.active_branch_id,
        state=row.state,
        parent_conversation_id=row.parent_conversation_id,
        depth=row.depth,
        overrides=dict(row.overrides or {}),
        created=r.as_utc(row.created),
        updated=r.as_utc(row.updated),
    )


def _branch(row: Any, head_seq: int | None) -> r.Branch:
    return r.Branch(
        id=row.id,
        conversation_id=row.conversation_id,
        name=row.name,
        parent_branch_id=row.parent_branch_id,
        fork_seq=row.fork_seq,
        head_seq=head_seq if head_seq is not None else row.fork_seq,
        created=r.as_utc(row.created),
    )


async def lookup_request(conn: AsyncConnection, key: r.RequestKey) -> str | None:
    found = await conn.execute(
        sa.select(request_ids.c.result_id).where(
            request_ids.c.scope == key.scope, request_ids.c.request_id == key.request_id
        )
    )
    return found.scalar_one_or_none()


async def record_request(conn: AsyncConnection, key: r.RequestKey, result_id: str) -> None:
    await conn.execute(
        request_ids.insert().values(
            scope=key.scope, request_id=key.request_id, result_id=result_id, created=r.utcnow()
        )
    )


class ConversationStore(ShieldedStore):
    @shielded
    async def lookup_request(self, key: r.RequestKey) -> str | None:
        async with self.engine.connect() as conn:
            return await lookup_request(conn, key)

    @shielded
    async def create_conversation(
        self,
        *,
        conversation_id: str,
        branch_id: str,
        agent_id: str,
        name: str,
        parent_conversation_id: str = "",
        depth: int = 0,
        request: r.RequestKey | None = None,
    ) -> r.Conversation:
        """Insert a conversation and its "main" branch; a known request key returns the first."""
        now = r.utcnow()
        try:
            async with self.engine.begin() as conn:
                if request and (earlier := await lookup_request(conn, request)):
                    return await self._get_by(conn, conversations.c.id, earlier)
                await conn.execute(
                    conversations.insert().values(
                        id=conversation_id,
                        name=name or conversation_id,
                        agent_id=agent_id,
                        active_branch_id=branch_id,
                        state=r.IDLE,
                        parent_conversation_id=parent_conversation_id,
                        depth=depth,
                        overrides={},
                        created=now,
                        updated=now,
                    )
                )
                await conn.execute(
                    branches.insert().values(
                        id=branch_id,
                        conversation_id=conversation_id,
                        name="main",
                        parent_branch_id="",
                        fork_seq=0,
                        created=now,
                    )
                )
                if request:
                    await record_request(conn, request, conversation_id)
        except IntegrityError as exc:
            raise AlreadyExists(
                f"a conversation named {name!r} already exists", reason="CONVERSATION_NAME_TAKEN"
            ) from exc
        return await self.get_conversation(conversation_id)

    async def _get_by(self, conn: AsyncConnection, column: Any, value: str) -> r.Conversation:
        row = (await conn.execute(sa.select(conversations).where(column == value))).first()
        if row is None:
            raise NotFound(f"conversation {value!r} not found", reason="CONVERSATION_NOT_FOUND")
        return _conversation(row)

    @shielded
    async def get_conversation(self, ref: str) -> r.Conversation:
        """By id, else by name; NotFound otherwise."""
        if not ref:
            raise NotFound("no conversation named", reason="CONVERSATION_NOT_FOUND")
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(conversations)
                    .where(sa.or_(conversations.c.id == ref, conversations.c.name == ref))
                    .order_by((conversations.c.id == ref).desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            raise NotFound(f"conversation {ref!r} not found", reason="CONVERSATION_NOT_FOUND")
        return _conversation(row)

    @shielded
    async def list_conversations(
        self, *, agent_id: str = "", page_size: int = 50, page_token: str = ""
    ) -> r.Page:
        """Newest first (ids sort by creation time); the token is the last id of a page."""
        query = sa.select(conversations).order_by(conversations.c.id.desc()).limit(page_size + 1)
        if agent_id:
            query = query.where(conversations.c.agent_id == agent_id)
        if page_token:
            query = query.where(conversations.c.id < page_token)
        async with self.engine.connect() as conn:
            rows = [_conversation(row) for row in await conn.execute(query)]
        more = len(rows) > page_size
        rows = rows[:page_size]
        return r.Page(rows, rows[-1].id if more and rows else "")

    @shielded
    async def update_conversation(
        self, conversation_id: str, *, only_if_state: tuple[str, ...] = (), **values: Any
    ) -> bool:
        """Set columns (with `only_if_state`: only in one of those states); True if changed."""
        query = conversations.update().where(conversations.c.id == conversation_id)
        if only_if_state:
            query = query.where(conversations.c.state.in_(only_if_state))
        async with self.engine.begin() as conn:
            result = await conn.execute(query.values(updated=r.utcnow(), **values))
        return result.rowcount > 0

    @shielded
    async def conversation_ids_in_state(self, state: str) -> list[str]:
        async with self.engine.connect() as conn:
            found = await conn.execute(
                sa.select(conversations.c.id).where(conversations.c.state == state)
            )
            return list(found.scalars())

    @shielded
    async def list_branches(self, conversation_id: str) -> list[r.Branch]:
        head = (
            sa.select(sa.func.max(states.c.seq))
            .where(states.c.branch_id == branches.c.id)
            .scalar_subquery()
        )
        query = (
            sa.select(branches, head.label("head"))
            .where(branches.c.conversation_id == conversation_id)
            .order_by(branches.c.created, branches.c.id)
        )
        async with self.engine.connect() as conn:
            return [_branch(row, row.head) for row in await conn.execute(query)]

    @shielded
    async def get_branch(self, conversation_id: str, ref: str) -> r.Branch:
        """A branch of the conversation by id or name."""
        for branch in await self.list_branches(conversation_id):
            if ref in (branch.id, branch.name):
                return branch
        raise NotFound(f"branch {ref!r} not found", reason="BRANCH_NOT_FOUND")

    @shielded
    async def create_branch(
        self,
        *,
        branch_id: str,
        conversation_id: str,
        name: str,
        parent_branch_id: str,
        fork_seq: int,
        activate: bool,
        request: r.RequestKey | None = None,
    ) -> str:
        """Insert a fork (and make it active); returns the branch id (the first one on a retry)."""
        now = r.utcnow()
        try:
            async with self.engine.begin() as conn:
                if request and (earlier := await lookup_request(conn, request)):
                    return earlier
                await conn.execute(
                    branches.insert().values(
                        id=branch_id,
                        conversation_id=conversation_id,
                        name=name,
                        parent_branch_id=parent_branch_id,
                        fork_seq=fork_seq,
                        created=now,
                    )
                )
                if activate:
                    moved = await conn.execute(
                        conversations.update()
                        .where(
                            conversations.c.id == conversation_id,
                            conversations.c.state != r.RUNNING,
                        )
                        .values(active_branch_id=branch_id, updated=now)
                    )
                    if moved.rowcount == 0:
                        raise FailedPrecondition(
                            "cannot switch branches while a turn is running",
                            reason="TURN_RUNNING",
                        )
                if request:
                    await record_request(conn, request, branch_id)
        except IntegrityError as exc:
            raise AlreadyExists(
                f"a branch named {name!r} already exists", reason="BRANCH_NAME_TAKEN"
            ) from exc
        return branch_id
