"""Delegation: the `delegate` tool runs a child conversation with another agent.

The child is created and messaged with the call id as request id, so a resumed parent finds
the same child and the same turn instead of starting new ones. Guards: the target must be a
configured agent, not already in the delegation chain (no cycles), and the child's depth
must stay within the limit (a top-level conversation has depth 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from p2e_kit.errors import P2EError
from p2e_kit.ids import new_id
from p2e_orchestrator.agents import AgentDirectory
from p2e_orchestrator.calls import AGENT_KEYS, MESSAGE_KEYS, pick
from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.tool_dispatch import ToolOutcome
from p2e_orchestrator.turn_context import TurnContext

if TYPE_CHECKING:
    from p2e_orchestrator.turns import TurnEngine

log = logging.getLogger(__name__)


class Delegator:
    def __init__(
        self, *, store: Store, agents: AgentDirectory, engine: TurnEngine, max_depth: int
    ) -> None:
        self._store = store
        self._agents = agents
        self._engine = engine
        self._max_depth = max_depth

    async def run(self, ctx: TurnContext, call: r.State, args: dict[str, Any]) -> ToolOutcome:
        target, message = pick(args, AGENT_KEYS), pick(args, MESSAGE_KEYS)
        refusal = await self._refusal(ctx.conversation, target, message)
        if refusal is not None:
            return refusal
        try:
            child = await self._store.create_conversation(
                conversation_id=new_id("conv"),
                branch_id=new_id("br"),
                agent_id=target,
                name="",
                parent_conversation_id=ctx.conversation.id,
                depth=ctx.conversation.depth + 1,
                request=r.RequestKey("delegate", call.id),
            )
            user = await self._engine.start_turn(child, message, request_id=call.id)
        except P2EError as exc:
            return ToolOutcome.error(exc.code, f"cannot delegate to {target}: {exc.message}")
        log.info("%s delegated to %s in %s", ctx.agent_id, target, child.id)
        try:
            finished = await self._engine.wait_turn(user)
        except asyncio.CancelledError:
            await self._engine.cancel_conversation(child.id)
            raise
        data = finished.data() if isinstance(finished.data(), dict) else {}
        if finished.is_error:
            code = str(data.get("error_code") or "DELEGATION_FAILED")
            return ToolOutcome.error(code, f"{target} could not answer: {finished.text}")
        answer = {"agent_id": target, "conversation_id": child.id, "answer": finished.text}
        return ToolOutcome.success(json.dumps(answer))

    async def _refusal(
        self, conversation: r.Conversation, target: str, message: str
    ) -> ToolOutcome | None:
        if not target or not message:
            return ToolOutcome.error(
                "INVALID_ARGUMENT",
                "delegate needs an agent_id and a message, e.g. "
                '{"agent_id": "agent_helper", "message": "What is the weather in Tokyo?"}',
            )
        if not self._agents.exists(target):
            return ToolOutcome.error("NOT_FOUND", f"there is no agent {target!r} to delegate to")
        chain = await self._chain(conversation)
        if target in chain:
            return ToolOutcome.error(
                "DELEGATION_CYCLE",
                f"{target} is already in the delegation chain {' -> '.join(chain)}",
            )
        if conversation.depth + 1 > self._max_depth:
            return ToolOutcome.error(
                "DELEGATION_DEPTH_EXCEEDED",
                f"delegation is limited to {self._max_depth} levels",
            )
        return None

    async def _chain(self, conversation: r.Conversation) -> list[str]:
        """Agent ids from the top-level conversation down to this one."""
        chain = [conversation.agent_id]
        current = conversation
        while current.parent_conversation_id and len(chain) <= self._max_depth + 1:
            current = await self._store.get_conversation(current.parent_conversation_id)
            chain.insert(0, current.agent_id)
        return chain
