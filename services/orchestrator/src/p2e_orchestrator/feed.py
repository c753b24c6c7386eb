"""In-process change notifications: "conversation X has this new state".

A follower subscribes *before* reading the database, then takes the states this process
appends from its subscription instead of reading them back: a state appended between the
read and the wait is still delivered, and one already read is skipped by its seq. A gap
in the seqs (a state appended elsewhere), an overflowing subscription or a notification
without a state sends the follower back to the database. Followers also poll, so states
appended by another replica show up within the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterator

from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r

MAX_BUFFERED = 256


class Subscription:
    """The states appended to one conversation since the follower last took them."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self._states: list[r.State] = []
        self._stale = False

    def put(self, state: r.State | None) -> None:
        if state is None or len(self._states) >= MAX_BUFFERED:
            self._states.clear()
            self._stale = True
        elif not self._stale:
            self._states.append(state)
        self.changed.set()

    def take(self) -> tuple[list[r.State], bool]:
        """(states in append order, whether the database must be read instead)."""
        states, stale = self._states, self._stale
        self._states, self._stale = [], False
        self.changed.clear()
        return states, stale


class ChangeFeed:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    @contextlib.contextmanager
    def subscribe(self, conversation_id: str) -> Iterator[Subscription]:
        sub = Subscription()
        self._subs.setdefault(conversation_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(conversation_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[conversation_id]

    def notify(self, conversation_id: str, state: r.State | None = None) -> None:
        """A state was stored (`None`: something changed, read the database)."""
        for sub in self._subs.get(conversation_id, ()):
            sub.put(state)


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
    with feed.subscribe(conversation_id) as sub:
        read = True
        while True:
            if read:
                for state in await store.visible_states(branch_id, after_seq=last):
                    yield state
                    last = state.seq
            states, read = sub.take()
            for state in states:
                if state.branch_id != branch_id or state.seq <= last:
                    continue  # another branch's, or already read from the database
                if state.seq != last + 1:
                    read = True  # a gap: appended by another replica
                    break
                yield state
                last = state.seq
            if not read and not states:
                try:
                    await asyncio.wait_for(sub.changed.wait(), poll_seconds)
                except TimeoutError:
                    read = True
