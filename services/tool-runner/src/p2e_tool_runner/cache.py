"""An in-memory TTL cache of results of side-effect-free tools, bounded in size."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class ResultCache:
    """Maps a key (tool + canonical arguments) to a result JSON until its TTL runs out.

    The oldest entries are evicted beyond `max_entries`. `clock` is injectable for tests.
    """

    def __init__(
        self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    @staticmethod
    def key(tool: str, canonical_args: str) -> str:
        return f"{tool}\x00{canonical_args}"

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0 or self._max <= 0:
            return
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
