"""The work-queue worker: runs ToolExecutionRequested commands from JetStream.

A durable pull consumer (kit `bus.TOOL_RUNNER_EXEC` on stream P2E_TOOLS) shared by every
replica, so replicas split the load. Per message: decode (undecodable -> term), keep the
message alive with in_progress() while the tool runs, execute (idempotent by call_id),
publish ToolExecutionCompleted (msg id = call_id), then ack. If publishing fails the
message is nak'ed and redelivered; the stored result is then published without re-running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from p2e_kit.bus import TOOL_RUNNER_EXEC, Bus, ConsumerSpec
from p2e_kit.errors import InvalidArgument
from p2e_tool_runner.events import decode_request, publish_completed
from p2e_tool_runner.executor import Executor

log = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 2.0
BURST_FETCH_SECONDS = 0.05
FIRST_KEEP_ALIVE_SECONDS = 0.2
MIN_KEEP_ALIVE_SECONDS = 0.2


class ToolWorker:
    """Fetches batches of tool calls and runs up to `concurrency` of them at once."""

    def __init__(
        self,
        bus: Bus,
        executor: Executor,
        *,
        concurrency: int = 16,
        fetch_batch: int = 16,
        fetch_timeout: float = 1.0,
        consumer: ConsumerSpec = TOOL_RUNNER_EXEC,
    ) -> None:
        self._bus = bus
        self._executor = executor
        self._concurrency = max(1, concurrency)
        self._batch = max(1, fetch_batch)
        self._fetch_timeout = fetch_timeout
        self._consumer = consumer
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the durable consumer and start fetching in the background."""
        await self._bus.ensure_consumer(self._consumer)
        sub = await self._bus.js.pull_subscribe_bind(
            durable=self._consumer.durable, stream=self._consumer.stream.name
        )
        self._loop_task = asyncio.create_task(self._fetch_loop(sub), name="tool-worker")
        log.info("tool worker consuming %s", self._consumer.durable)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop fetching, give running calls `grace_seconds`, then cancel the rest
        (their messages are redelivered; results already stored are not re-run)."""
        self._stopping.set()
        if self._loop_task is not None:
            await asyncio.wait([self._loop_task], timeout=self._fetch_timeout + 1.0)
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _fetch_loop(self, sub: Any) -> None:
        try:
            while not self._stopping.is_set():
                free = self._concurrency - len(self._tasks)
                if free <= 0:
                    await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                    continue
                # Wait for one call (returns as soon as it arrives), then take what else is
                # already waiting, up to the batch size and the free slots.
                if not self._spawn(await self._fetch(sub, 1, self._fetch_timeout)):
                    continue
                free = min(self._concurrency - len(self._tasks), self._batch - 1)
                if free > 0:
                    self._spawn(await self._fetch(sub, free, BURST_FETCH_SECONDS))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _fetch(self, sub: Any, batch: int, wait_seconds: float) -> list[Any]:
        try:
            return await sub.fetch(batch=batch, timeout=wait_seconds)
        except TimeoutError:
            return []
        except Exception as exc:
            if not self._stopping.is_set():
                log.warning("fetching tool calls failed: %s", exc)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
            return []

    def _spawn(self, messages: list[Any]) -> int:
        for msg in messages:
            task = asyncio.create_task(self._handle(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(messages)

    async def _handle(self, msg: Any) -> None:
        try:
            request = decode_request(msg.data)
        except InvalidArgument as exc:
            log.warning("terminating poison message on %s: %s", msg.subject, exc)
            await _settle(msg.term)
            return
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        try:
            outcome = await self._executor.execute(request)
            await publish_completed(self._bus, outcome, request)
        except asyncio.CancelledError:  # stopping: let another replica take it now
            await _settle(msg.nak)
            raise
        except Exception:
            log.exception(
                "call %s (%s) not completed; will retry", request.call_id, request.tool_name
            )
            await _settle(msg.nak, delay=RETRY_DELAY_SECONDS)
            return
        finally:
            heartbeat.cancel()
        log.info(
            "call %s %s as %r: %s %s",
            request.call_id,
            request.tool_name,
            request.agent_id,
            outcome.status,
            outcome.error_code,
        )
        await _settle(msg.ack)

    async def _keep_alive(self, msg: Any) -> None:
        """Tell JetStream the call is still running: soon after it starts (AckWait has been
        running since the message was delivered, and a busy worker may have taken a while to
        get to it), then three times per AckWait. A call done within the first
        FIRST_KEEP_ALIVE_SECONDS sends none."""
        interval = max(self._consumer.ack_wait_seconds / 3, MIN_KEEP_ALIVE_SECONDS)
        await asyncio.sleep(min(FIRST_KEEP_ALIVE_SECONDS, interval))
        while True:
            await _settle(msg.in_progress)
            await asyncio.sleep(interval)


async def _settle(action: Any, **kwargs: Any) -> None:
    try:
        await action(**kwargs)
    except Exception as exc:
        log.warning("acknowledging a tool call failed: %s", exc)
