"""Running one tool call: validate, cache, dedup, time out, record (no grpc here).

Order of one `execute`:
1. a call_id already stored returns its stored result (idempotency: redelivery never re-runs);
2. the tool is looked up, the JSON arguments parsed (floats as Decimal) and validated;
3. side-effect-free tools with a cache_ttl are served from the TTL cache when possible;
4. side-effecting tools with a dedup policy look for an identical earlier call in the
   conversation: "strict" refuses it, "penalty" runs it and flags the result;
5. the tool runs with a timeout as `agent_id`; its P2EError becomes an ERROR result whose
   error_code is the error's reason;
6. the result is stored under call_id, except transient failures (dependency down, timeout,
   internal error), which a redelivery may retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from p2e_kit.errors import FailedPrecondition, InvalidArgument, P2EError, PermissionDenied
from p2e_tool_runner.cache import ResultCache
from p2e_tool_runner.ports import LedgerPort
from p2e_tool_runner.sdk import ToolContext, ToolRegistry, ToolSpec
from p2e_tool_runner.store import ExecutionRecord, ExecutionStore

log = logging.getLogger(__name__)

OK = "OK"
ERROR = "ERROR"
TRANSIENT_CODES = frozenset({"DEPENDENCY_UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"})


@dataclass(frozen=True)
class ExecutionRequest:
    """One call to run, as the runtime asked for it."""

    call_id: str
    tool_name: str
    arguments_json: str
    agent_id: str
    conversation_id: str
    branch_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """The data of a tools.v1.ToolResult."""

    call_id: str
    tool_name: str
    status: str
    result_json: str = ""
    error_code: str = ""
    error_message: str = ""
    cached: bool = False
    duration_ms: int = 0
    duplicate_of: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def parse_arguments(text: str) -> dict[str, Any]:
    """A JSON object from the model's argument text; numbers with a fraction stay exact."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise InvalidArgument(
            f"arguments are not valid JSON: {exc}", field="arguments_json"
        ) from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"arguments must be a JSON object, not {type(value).__name__}", field="arguments_json"
        )
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any, *, canonical: bool = False) -> str:
    if canonical:
        return json.dumps(value, default=_json_default, sort_keys=True, separators=(",", ":"))
    return json.dumps(value, default=_json_default)


def canonical_args(args: BaseModel) -> str:
    """The validated arguments as canonical JSON: equal calls give equal text."""
    return to_json(args.model_dump(mode="json"), canonical=True)


class Executor:
    """Runs tool calls of one registry; shared by the gRPC API and the work-queue worker."""

    def __init__(
        self,
        registry: ToolRegistry,
        store: ExecutionStore,
        *,
        ledger: LedgerPort | None = None,
        cache: ResultCache | None = None,
        timeout_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._store = store
        self._ledger = ledger
        self._cache = cache if cache is not None else ResultCache()
        self._timeout = timeout_seconds
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Outcome]] = {}
        self._dedup_locks = _KeyedLocks()

    async def execute(self, request: ExecutionRequest) -> Outcome:
        """Run `request` once per call_id; a repeat returns the first outcome."""
        stored = await self._store.get(request.call_id)
        if stored is not None:
            return _replayed(stored, request)
        running = self._inflight.get(request.call_id)
        if running is not None:  # the same call is being run right now: wait for it
            await asyncio.wait([running])
            if not running.cancelled() and running.exception() is None:
                return running.result()
            return await self.execute(request)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._inflight[request.call_id] = future
        try:
            outcome = await self._run_and_record(request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: the owner re-raises it
            else:
                future.cancel()
            raise
        else:
            future.set_result(outcome)
            return outcome
        finally:
            del self._inflight[request.call_id]

    async def _run_and_record(self, request: ExecutionRequest) -> Outcome:
        spec = self.registry.find(request.tool_name)
        if spec is None or spec.side_effect_free or spec.dedup_policy == "none":
            return await self._run_and_save(request)
        # Check-run-save of deduplicated tools is serialized per conversation, agent and tool.
        key = "\x00".join((request.conversation_id, request.agent_id, spec.name))
        async with self._dedup_locks.hold(key):
            return await self._run_and_save(request)

    async def _run_and_save(self, request: ExecutionRequest) -> Outcome:
        started = self._clock()
        outcome, args_text = await self._run(request)
        outcome = replace(outcome, duration_ms=int((self._clock() - started) * 1000))
        if outcome.error_code in TRANSIENT_CODES:
            return outcome
        record = _record(outcome, request, args_text)
        winner = await self._store.save(record)
        return outcome if winner is record else _replayed(winner, request)

    async def _run(self, request: ExecutionRequest) -> tuple[Outcome, str]:
        """The outcome of one call and its arguments as stored (canonical when valid)."""
        args_text = request.arguments_json
        try:
            spec, args, args_text = self._prepare(request)
            outcome = await self._run_valid(spec, args, args_text, request)
        except P2EError as exc:
            outcome = _error(request, exc.reason, exc.message)
        except TimeoutError:
            message = f"{request.tool_name} did not finish within {self._timeout:g}s"
            outcome = _error(request, "DEADLINE_EXCEEDED", message)
        except Exception:
            log.exception("tool %s failed (call %s)", request.tool_name, request.call_id)
            outcome = _error(request, "INTERNAL", f"{request.tool_name} failed unexpectedly")
        return outcome, args_text

    def _prepare(self, request: ExecutionRequest) -> tuple[ToolSpec, BaseModel, str]:
        spec = self.registry.get(request.tool_name)
        args = spec.validate(parse_arguments(request.arguments_json))
        if spec.requires_agent and not request.agent_id:
            raise PermissionDenied(f"{spec.name} runs only as an agent (no agent_id given)")
        return spec, args, canonical_args(args)

    async def _run_valid(
        self, spec: ToolSpec, args: BaseModel, args_text: str, request: ExecutionRequest
    ) -> Outcome:
        if spec.side_effect_free and spec.cache_ttl > 0:
            return await self._run_cached(spec, args, args_text, request)
        if spec.side_effect_free or spec.dedup_policy == "none":
            return await self._invoke(spec, args, request)
        earlier = await self._store.find_duplicate(
            conversation=request.conversation_id,
            agent=request.agent_id,
            tool=spec.name,
            args=args_text,
            exclude_call_id=request.call_id,
        )
        if earlier is not None and spec.dedup_policy == "strict":
            raise FailedPrecondition(
                f"an identical {spec.name} call ({earlier}) already ran in this "
                "conversation; refusing to repeat it",
                reason="DUPLICATE_CALL",
            )
        outcome = await self._invoke(spec, args, request)
        if earlier is not None and outcome.ok:
            outcome = _flag_duplicate(outcome, earlier)
        return outcome

    async def _run_cached(
        self, spec: ToolSpec, args: BaseModel, args_text: str, request: ExecutionRequest
    ) -> Outcome:
        key = ResultCache.key(spec.name, args_text)
        hit = self._cache.get(key)
        if hit is not None:
            return Outcome(request.call_id, spec.name, OK, result_json=hit, cached=True)
        outcome = await self._invoke(spec, args, request)
        if outcome.ok:
            self._cache.put(key, outcome.result_json, spec.cache_ttl)
        return outcome

    async def _invoke(self, spec: ToolSpec, args: BaseModel, request: ExecutionRequest) -> Outcome:
        ctx = ToolContext(
            agent_id=request.agent_id,
            conversation_id=request.conversation_id,
            call_id=request.call_id,
            branch_id=request.branch_id,
            ledger=self._ledger,
        )
        result = await _with_timeout(spec.fn(ctx, args), self._timeout)
        return Outcome(request.call_id, spec.name, OK, result_json=to_json(result))


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def _with_timeout(work: Awaitable[Any], seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await work


def _flag_duplicate(outcome: Outcome, earlier: str) -> Outcome:
    value = json.loads(outcome.result_json)
    if not isinstance(value, dict):
        value = {"result": value}
    value["duplicate_of"] = earlier
    value["warning"] = "an identical call already ran in this conversation"
    return replace(outcome, result_json=to_json(value), duplicate_of=earlier)


def _error(request: ExecutionRequest, code: str, message: str) -> Outcome:
    return Outcome(
        request.call_id, request.tool_name, ERROR, error_code=code, error_message=message
    )


def _record(outcome: Outcome, request: ExecutionRequest, args_text: str) -> ExecutionRecord:
    return ExecutionRecord(
        call_id=request.call_id,
        tool=request.tool_name,
        args=args_text,
        agent=request.agent_id,
        conversation=request.conversation_id,
        status=outcome.status,
        result=outcome.result_json,
        error_code=outcome.error_code,
        error_message=outcome.error_message,
        cached=outcome.cached,
        duplicate_of=outcome.duplicate_of,
        duration_ms=outcome.duration_ms,
    )


def _replayed(stored: ExecutionRecord, request: ExecutionRequest) -> Outcome:
    """The stored outcome of a call_id; an error if the id is reused for another call."""
    same = (stored.tool, stored.agent, stored.conversation)
    if same != (request.tool_name, request.agent_id, request.conversation_id):
        return _error(
            request,
            "ALREADY_EXISTS",
            f"call id {request.call_id} was already used for {stored.tool} "
            f"as {stored.agent or 'no agent'} in conversation {stored.conversation or '-'}",
        )
    return Outcome(
        call_id=stored.call_id,
        tool_name=stored.tool,
        status=stored.status,
        result_json=stored.result,
        error_code=stored.error_code,
        error_message=stored.error_message,
        cached=stored.cached,
        duration_ms=stored.duration_ms,
        duplicate_of=stored.duplicate_of,
    )
