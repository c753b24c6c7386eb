"""The calls of a turn: their states, their effects, and running them concurrently.

Each call the model asks for becomes a call state with an effect row written in the same
transaction, before anything is dispatched. Running a call first looks at its effect: a
completed one is reused (the result survived a restart), a pending one is (re)dispatched
with the same call id, so the tool-runner and the ledger deduplicate it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from p2e_orchestrator.rendering import AskedCall
from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.tool_catalog import DELEGATE_TOOL
from p2e_orchestrator.tool_dispatch import ToolDispatcher, ToolInvocation, ToolOutcome
from p2e_orchestrator.turn_context import TurnContext

log = logging.getLogger(__name__)

TOOL_EFFECT = "tool"
DELEGATION_EFFECT = "delegation"
AGENT_KEYS = ("agent_id", "agent", "to_agent", "target_agent", "target", "recipient")
MESSAGE_KEYS = ("message", "task", "text", "query", "request", "prompt", "instructions")

# (turn context, call state, parsed arguments) -> outcome of a delegation
Delegate = Callable[[TurnContext, r.State, dict[str, Any]], Awaitable[ToolOutcome]]


def parse_arguments(arguments: str) -> dict[str, Any] | None:
    """The call's arguments as a dict; None when they are not a JSON object."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def pick(args: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def call_state(call: AskedCall) -> tuple[r.NewState, r.NewEffect]:
    """The state and effect of one requested call (a `delegate` call is an agent call)."""
    request = json.dumps({"tool": call.name, "arguments": call.arguments})
    text = ""
    if call.name == DELEGATE_TOOL:
        args = parse_arguments(call.arguments) or {}
        target, text = pick(args, AGENT_KEYS), pick(args, MESSAGE_KEYS)
        kind, effect = r.AGENT_CALL, DELEGATION_EFFECT
    else:
        target, kind, effect = call.name, r.TOOL_CALL, TOOL_EFFECT
    state = r.NewState(
        kind=kind,
        id=call.call_id,
        call_id=call.call_id,
        target=target,
        text=text,
        data_json=call.arguments,
    )
    return state, r.NewEffect(kind=effect, request_json=request)


def result_state(call: r.State, outcome: ToolOutcome) -> r.NewState:
    kind = r.AGENT_RESULT if call.kind == r.AGENT_CALL else r.TOOL_RESULT
    text = outcome.error_message
    if outcome.ok and kind == r.AGENT_RESULT:
        answer = parse_arguments(outcome.result_json) or {}
        text = str(answer.get("answer", ""))
    return r.NewState(
        kind=kind,
        call_id=call.call_id,
        target=call.target,
        text=text,
        data_json=outcome.data_json(),
        is_error=not outcome.ok,
    )


class CallRunner:
    def __init__(
        self,
        *,
        store: Store,
        dispatcher: ToolDispatcher,
        timeout_seconds: float,
        delegate: Delegate,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._timeout = timeout_seconds
        self._delegate = delegate

    async def run(
        self, ctx: TurnContext, pending: list[r.State]
    ) -> list[tuple[r.State, ToolOutcome]]:
        """Run every pending call concurrently; outcomes in call order."""
        outcomes = await asyncio.gather(*(self._one(ctx, call) for call in pending))
        return list(zip(pending, outcomes, strict=True))

    async def _one(self, ctx: TurnContext, call: r.State) -> ToolOutcome:
        if ctx.resume:  # a fresh call's effect was written pending just now: nothing to reuse
            effect = await self._store.get_effect(call.id)
            if effect is not None and effect.status == r.COMPLETED and effect.result is not None:
                return ToolOutcome.from_dict(effect.result)
        outcome = await self._execute(ctx, call)
        await self._store.complete_effect(call.id, outcome.to_dict())
        return outcome

    async def _execute(self, ctx: TurnContext, call: r.State) -> ToolOutcome:
        name = DELEGATE_TOOL if call.kind == r.AGENT_CALL else call.target
        if name not in ctx.offered:
            offered = ", ".join(sorted(ctx.offered)) or "none"
            return ToolOutcome.error(
                "PERMISSION_DENIED",
                f"tool {name!r} is not available to {ctx.agent_id} (available: {offered})",
            )
        args = parse_arguments(call.data_json)
        if args is None:
            return ToolOutcome.error(
                "INVALID_ARGUMENT",
                f"the arguments of {name} are not a JSON object: {call.data_json!r}",
            )
        if call.kind == r.AGENT_CALL:
            return await self._delegate(ctx, call, args)
        invocation = ToolInvocation(
            call_id=call.call_id,
            tool_name=name,
            arguments_json=call.data_json or "{}",
            agent_id=ctx.agent_id,
            conversation_id=ctx.conversation.id,
            branch_id=ctx.branch_id,
            state_id=call.id,
        )
        try:
            return await asyncio.wait_for(
                self._dispatcher.run(invocation, resume=ctx.resume), self._timeout
            )
        except TimeoutError:
            log.warning("tool call %s (%s) timed out after %gs", call.call_id, name, self._timeout)
            return ToolOutcome.error(
                "DEADLINE_EXCEEDED", f"{name} did not answer within {self._timeout:g}s"
            )
