"""Cancellation safety: a caller cancelled mid-query must not strand a database connection.

Every public store method runs as its own task behind `asyncio.shield`: a cancelled caller
stops waiting, the query finishes and returns its connection to the pool, and `close()`
waits for such stragglers before disposing of the engine.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="ShieldedStore")
DRAIN_SECONDS = 5.0


class ShieldedStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._inflight: set[asyncio.Task[Any]] = set()

    def _track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(_settle)
        task.add_done_callback(self._inflight.discard)
        return task

    async def close(self) -> None:
        """Wait for queries still running for cancelled callers, then dispose of the engine."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=DRAIN_SECONDS)
        await self.engine.dispose()


def _settle(task: asyncio.Task[Any]) -> None:
    # Nobody may be waiting any more: retrieve the outcome so asyncio does not log it.
    if not task.cancelled():
        task.exception()


def shielded(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.shield(self._track(method(self, *args, **kwargs)))

    return wrapper
