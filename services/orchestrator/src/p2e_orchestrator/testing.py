"""Real, in-memory implementations of the orchestrator's ports, for tests and local runs.

- ScriptedModel: a ModelPort answering from a function of the messages (or a fixed list).
- InMemoryToolDispatcher: a ToolDispatcher running Python handlers in-process.
- StaticToolCatalog: a ToolCatalog with fixed tools.
- RecordingPublisher: a StatePublisher keeping what it was given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from p2e_orchestrator.llm.port import ModelReply, ToolCallRequest
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.tool_catalog import ToolSpec, with_builtins
from p2e_orchestrator.tool_dispatch import ToolInvocation, ToolOutcome

Script = Callable[[list[dict[str, Any]], list[dict[str, Any]]], ModelReply]


@dataclass
class ModelCall:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    temperature: float | None


class ScriptedModel:
    """Answers with `script(messages, tools)`, or pops `replies` in order."""

    def __init__(
        self, script: Script | None = None, replies: list[ModelReply] | None = None
    ) -> None:
        self._script = script
        self._replies = list(replies or [])
        self.calls: list[ModelCall] = []

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        temperature: float | None = None,
    ) -> ModelReply:
        self.calls.append(ModelCall(model, messages, tools, temperature))
        if self._script is not None:
            return self._script(messages, tools)
        if not self._replies:
            raise RuntimeError("ScriptedModel: no reply left")
        return self._replies.pop(0)


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "") -> ToolCallRequest:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCallRequest(id=call_id or f"call_{name}", name=name, arguments=args)


Handler = Callable[[ToolInvocation], Awaitable[ToolOutcome] | ToolOutcome]


@dataclass
class InMemoryToolDispatcher:
    """Runs each call with its tool's handler; an unknown tool is an error outcome."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    invocations: list[ToolInvocation] = field(default_factory=list)

    async def run(self, invocation: ToolInvocation, *, resume: bool = False) -> ToolOutcome:
        self.invocations.append(invocation)
        handler = self.handlers.get(invocation.tool_name)
        if handler is None:
            return ToolOutcome.error("NOT_FOUND", f"no tool {invocation.tool_name}")
        outcome = handler(invocation)
        if asyncio.iscoroutine(outcome):
            return await outcome
        return outcome  # type: ignore[return-value]


class StaticToolCatalog:
    def __init__(self, specs: list[ToolSpec]) -> None:
        self._tools = with_builtins({s.name: s for s in specs})

    async def tools(self) -> dict[str, ToolSpec]:
        return self._tools


@dataclass
class RecordingPublisher:
    states: list[r.State] = field(default_factory=list)

    async def publish(self, state: r.State) -> None:
        self.states.append(state)


@dataclass
class Harness:
    """The domain wired over in-memory ports (no sockets): what unit tests drive."""

    store: Any
    turns: Any
    conversations: Any
    publisher: RecordingPublisher
    model: ScriptedModel
    dispatcher: InMemoryToolDispatcher

    async def close(self) -> None:
        await self.turns.close()
        await self.store.close()


async def harness(
    db_url: str,
    *,
    agents: list[Any],
    model: ScriptedModel,
    dispatcher: InMemoryToolDispatcher | None = None,
    tools: list[ToolSpec] | None = None,
    limits: Any = None,
) -> Harness:
    from p2e_kit.db import create_engine
    from p2e_orchestrator.agents import AgentDirectory
    from p2e_orchestrator.conversations import Conversations
    from p2e_orchestrator.feed import ChangeFeed
    from p2e_orchestrator.storage import Store
    from p2e_orchestrator.turn_context import TurnLimits
    from p2e_orchestrator.turns import TurnEngine

    store = Store(create_engine(db_url))
    await store.create_all()
    directory = AgentDirectory(agents, lambda configured: f"resolved/{configured}")
    catalog = StaticToolCatalog(tools or [])
    dispatcher = dispatcher or InMemoryToolDispatcher()
    publisher = RecordingPublisher()
    feed = ChangeFeed()
    limits = limits or TurnLimits(tool_timeout_seconds=2.0, poll_seconds=0.2)
    turns = TurnEngine(
        store=store,
        agents=directory,
        catalog=catalog,
        dispatcher=dispatcher,
        model=model,
        publisher=publisher,
        feed=feed,
        limits=limits,
    )
    conversations = Conversations(
        store=store, agents=directory, catalog=catalog, engine=turns, feed=feed, poll_seconds=0.2
    )
    return Harness(store, turns, conversations, publisher, model, dispatcher)
