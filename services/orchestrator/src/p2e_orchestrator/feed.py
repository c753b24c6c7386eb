"""In-process change notifications: "conversation X has new states".

Followers take the waiter *before* reading the database, then sleep on it: an append
between the read and the wait still wakes them. Followers also poll, so states appended by
another replica show up within the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r


class ChangeFeed:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def waiter(self, conversation_id: str) -> asyncio.Event:
        return self._events.setdefault(conversation_id, asyncio.Event())

    def notify(self, conversation_id: str) -> None:
        event = self._events.pop(conversation_id, None)
        if event is not None:
            event.set()


async def follow(
    store: Store,
    feed: ChangeFeed,
    *,
    conversation_id: str,
    branch_id: str,
    after_seq: int,
    poll_seconds: float,
) -> AsyncGenerator[r.State, None]:
    """The branch's visible states after `after_seq`, then new ones as they are appended."""
    last = after_seq
    while True:
        changed = feed.waiter(conversation_id)
        fresh = await store.visible_states(branch_id, after_seq=last)
        for state in fresh:
            yield state
            last = state.seq
        if not fresh:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), poll_seconds)
