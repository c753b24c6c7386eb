"""Interaction states (append-only, per branch) and effects.

A branch's visible stack is its own states plus its parent's visible stack up to the fork
point, recursively: rewinding never copies or deletes a state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from p2e_kit.errors import NotFound
from p2e_kit.ids import new_id
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.storage.base import ShieldedStore, shielded
from p2e_orchestrator.storage.conversations import record_request
from p2e_orchestrator.storage.tables import branches, conversations, effects, states

UNBOUNDED = 2**62


def _state(row: Any) -> r.State:
    return r.State(
        id=row.id,
        conversation_id=row.conversation_id,
        branch_id=row.branch_id,
        seq=row.seq,
        parent_id=row.parent_id,
        agent_id=row.agent_id,
        kind=row.kind,
        text=row.text,
        call_id=row.call_id,
        target=row.target,
        data_json=row.data_json,
        is_error=row.is_error,
        created=r.as_utc(row.created),
        published=row.published,
    )


def _effect(row: Any) -> r.Effect:
    return r.Effect(
        key=row.key,
        conversation_id=row.conversation_id,
        kind=row.kind,
        status=row.status,
        request_json=row.request_json,
        result=row.result_json,
        created=r.as_utc(row.created),
        completed=r.as_utc(row.completed) if row.completed else None,
    )


class StackStore(ShieldedStore):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        # Branches never change once created: (parent id, fork seq) by branch id.
        self._links: dict[str, tuple[str, int]] = {}

    async def _chain(self, conn: AsyncConnection, branch_id: str) -> list[tuple[str, int]]:
        """[(branch id, highest visible seq)] from the branch up to the main line."""
        chain: list[tuple[str, int]] = []
        bound, current = UNBOUNDED, branch_id
        while current:
            if current not in self._links:
                row = (
                    await conn.execute(
                        sa.select(branches.c.parent_branch_id, branches.c.fork_seq).where(
                            branches.c.id == current
                        )
                    )
                ).first()
                if row is None:
                    raise NotFound(f"branch {current!r} not found", reason="BRANCH_NOT_FOUND")
                self._links[current] = (row.parent_branch_id, row.fork_seq)
            chain.append((current, bound))
            parent, fork_seq = self._links[current]
            bound, current = min(bound, fork_seq), parent
        return chain

    def _visible(self, chain: list[tuple[str, int]]) -> Any:
        return sa.or_(
            *(sa.and_(states.c.branch_id == b, states.c.seq <= bound) for b, bound in chain)
        )

    @shielded
    async def visible_states(
        self, branch_id: str, *, after_seq: int = 0, limit: int = 0
    ) -> list[r.State]:
        """The branch's stack, oldest first: after `after_seq`, or only the last `limit`."""
        async with self.engine.connect() as conn:
            chain = await self._chain(conn, branch_id)
            query = sa.select(states).where(self._visible(chain), states.c.seq > after_seq)
            if limit > 0:
                rows = await conn.execute(query.order_by(states.c.seq.desc()).limit(limit))
                return [_state(row) for row in reversed(rows.all())]
            rows = await conn.execute(query.order_by(states.c.seq))
            return [_state(row) for row in rows]

    async def _tail(self, conn: AsyncConnection, branch_id: str) -> tuple[int, str]:
        """(seq, id) of the branch's newest visible state; (0, "") when empty."""
        own = (
            await conn.execute(
                sa.select(states.c.seq, states.c.id)
                .where(states.c.branch_id == branch_id)
                .order_by(states.c.seq.desc())
                .limit(1)
            )
        ).first()
        if own is not None:
            return own.seq, own.id
        chain = await self._chain(conn, branch_id)
        fork_seq = self._links[branch_id][1]
        inherited = await conn.execute(
            sa.select(states.c.id).where(self._visible(chain), states.c.seq == fork_seq)
        )
        return fork_seq, inherited.scalar_one_or_none() or ""

    async def append_state(
        self,
        *,
        conversation_id: str,
        branch_id: str,
        agent_id: str,
        new: r.NewState,
        effect: r.NewEffect | None = None,
        request: r.RequestKey | None = None,
        end_turn: bool = False,
    ) -> r.State:
        """Append at the branch's head, atomically with its effect or idempotency key.

        `end_turn`: also move the conversation from RUNNING to IDLE (the finished state and
        the end of the turn become visible together).
        """
        (state,) = await self.append_states(
            conversation_id=conversation_id,
            branch_id=branch_id,
            agent_id=agent_id,
            items=[(new, effect)],
            request=request,
            end_turn=end_turn,
        )
        return state

    @shielded
    async def append_states(
        self,
        *,
        conversation_id: str,
        branch_id: str,
        agent_id: str,
        items: list[tuple[r.NewState, r.NewEffect | None]],
        request: r.RequestKey | None = None,
        end_turn: bool = False,
    ) -> list[r.State]:
        """Append states in order at the branch's head, with their effects, in one transaction.

        `request` keys the first state; `end_turn` as in `append_state`.
        """
        now = r.utcnow()
        appended: list[r.State] = []
        async with self.engine.begin() as conn:
            seq, parent_id = await self._tail(conn, branch_id)
            for new, effect in items:
                seq += 1
                values = _state_values(new, conversation_id, branch_id, agent_id, seq, now)
                values["parent_id"] = parent_id
                await conn.execute(states.insert().values(**values))
                if effect is not None:
                    await conn.execute(_effect_insert(values["id"], conversation_id, effect, now))
                if request is not None and not appended:
                    await record_request(conn, request, values["id"])
                appended.append(_state(_Row(values)))
                parent_id = values["id"]
            touch = conversations.update().where(conversations.c.id == conversation_id)
            await conn.execute(touch.values(updated=now))
            if end_turn:
                await conn.execute(
                    touch.where(conversations.c.state == r.RUNNING).values(state=r.IDLE)
                )
        return appended

    @shielded
    async def get_state(self, state_id: str) -> r.State:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(states).where(states.c.id == state_id))).first()
        if row is None:
            raise NotFound(f"state {state_id!r} not found", reason="STATE_NOT_FOUND")
        return _state(row)

    @shielded
    async def unpublished_states(self, *, created_before: datetime, limit: int) -> list[r.State]:
        query = (
            sa.select(states)
            .where(states.c.published.is_(False), states.c.created < created_before)
            .order_by(states.c.created, states.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_state(row) for row in await conn.execute(query)]

    @shielded
    async def mark_published(self, state_ids: list[str]) -> None:
        if not state_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                states.update().where(states.c.id.in_(state_ids)).values(published=True)
            )

    @shielded
    async def get_effect(self, key: str) -> r.Effect | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(effects).where(effects.c.key == key))).first()
        return _effect(row) if row is not None else None

    @shielded
    async def complete_effect(self, key: str, result: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                effects.update()
                .where(effects.c.key == key, effects.c.status == r.PENDING)
                .values(status=r.COMPLETED, result_json=result, completed=r.utcnow())
            )


def _state_values(
    new: r.NewState, conversation_id: str, branch_id: str, agent_id: str, seq: int, now: datetime
) -> dict[str, Any]:
    return {
        "id": new.id or new_id("st"),
        "conversation_id": conversation_id,
        "branch_id": branch_id,
        "seq": seq,
        "agent_id": agent_id,
        "kind": new.kind,
        "text": new.text,
        "call_id": new.call_id,
        "target": new.target,
        "data_json": new.data_json,
        "is_error": new.is_error,
        "published": False,
        "created": now,
    }


def _effect_insert(key: str, conversation_id: str, effect: r.NewEffect, now: datetime) -> Any:
    return effects.insert().values(
        key=key,
        conversation_id=conversation_id,
        kind=effect.kind,
        status=r.PENDING,
        request_json=effect.request_json,
        result_json=None,
        created=now,
    )


class _Row:
    """Attribute access over a dict, so a just-inserted row converts like a fetched one."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
