"""In-process wake-ups for live watchers: "new rows have landed"."""

from __future__ import annotations

import asyncio


class Notifier:
    """A version counter plus an event; watchers wait for the version to move past theirs."""

    def __init__(self) -> None:
        self._version = 0
        self._event = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    def notify(self) -> None:
        self._version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seen_version: int, max_seconds: float) -> bool:
        """Return True once the version differs from `seen_version`, False after `max_seconds`."""
        if self._version != seen_version:
            return True
        try:
            await asyncio.wait_for(self._event.wait(), max_seconds)
        except TimeoutError:
            return False
        return True
