"""Conversations as data: create, read, branches (rewind / checkout), overrides, watch, cancel."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from p2e_kit.errors import FailedPrecondition, InvalidArgument
from p2e_kit.errors import PreconditionViolation as Violation
from p2e_kit.ids import new_id
from p2e_orchestrator import behaviors
from p2e_orchestrator.agents import AgentDirectory
from p2e_orchestrator.feed import ChangeFeed, follow
from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.tool_catalog import ToolCatalog
from p2e_orchestrator.turns import TurnEngine

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TEMPERATURE = 2.0


def _check_name(name: str, field: str) -> None:
    if name and not NAME_PATTERN.match(name):
        raise InvalidArgument(
            f"bad name {name!r}: letters, digits, '_', '.', ':' and '-', at most 128", field=field
        )


def _running(conversation: r.Conversation, action: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"cannot {action} while a turn is running in conversation {conversation.name}",
        reason="TURN_RUNNING",
        violations=[Violation("CONVERSATION_STATE", conversation.id, r.RUNNING)],
    )


class Conversations:
    def __init__(
        self,
        *,
        store: Store,
        agents: AgentDirectory,
        catalog: ToolCatalog,
        engine: TurnEngine,
        feed: ChangeFeed,
        poll_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._agents = agents
        self._catalog = catalog
        self._engine = engine
        self._feed = feed
        self._poll = poll_seconds

    async def create(self, agent_id: str, name: str = "", request_id: str = "") -> r.Conversation:
        """A new conversation with an agent (NOT_FOUND agent, ALREADY_EXISTS name)."""
        request = r.RequestKey("create_conversation", request_id) if request_id else None
        if request and (earlier := await self._store.lookup_request(request)):
            return await self._store.get_conversation(earlier)
        self._agents.get(agent_id)
        _check_name(name, "name")
        return await self._store.create_conversation(
            conversation_id=new_id("conv"),
            branch_id=new_id("br"),
            agent_id=agent_id,
            name=name,
            request=request,
        )

    async def get(self, ref: str) -> r.Conversation:
        if not ref:
            raise InvalidArgument("name a conversation by id or name", field="conversation")
        return await self._store.get_conversation(ref)

    async def list(self, *, agent_id: str = "", page_size: int = 0, page_token: str = "") -> r.Page:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", field="page_size")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return await self._store.list_conversations(
            agent_id=agent_id, page_size=size, page_token=page_token
        )

    async def stack(
        self, ref: str, branch_ref: str = "", limit: int = 0
    ) -> tuple[r.Conversation, r.Branch, list[r.State]]:
        conversation = await self.get(ref)
        branch = await self._store.get_branch(
            conversation.id, branch_ref or conversation.active_branch_id
        )
        states = await self._store.visible_states(branch.id, limit=max(limit, 0))
        return conversation, branch, states

    async def branches(self, ref: str) -> tuple[r.Conversation, list[r.Branch]]:
        conversation = await self.get(ref)
        return conversation, await self._store.list_branches(conversation.id)

    async def rewind(
        self, ref: str, seq: int, branch_name: str = "", request_id: str = ""
    ) -> tuple[r.Conversation, r.Branch]:
        """Fork the active branch after `seq` and make the fork active; nothing is copied."""
        conversation = await self.get(ref)
        request = r.RequestKey(f"rewind:{conversation.id}", request_id) if request_id else None
        if request and (earlier := await self._store.lookup_request(request)):
            return conversation, await self._store.get_branch(conversation.id, earlier)
        if conversation.state == r.RUNNING:
            raise _running(conversation, "rewind")
        active = await self._store.get_branch(conversation.id, conversation.active_branch_id)
        if not 0 <= seq <= active.head_seq:
            raise InvalidArgument(
                f"seq {seq} is out of range: the active branch has states 1..{active.head_seq}",
                field="seq",
            )
        _check_name(branch_name, "branch_name")
        name = branch_name or await self._free_name(conversation.id, f"rewind-{seq}")
        branch_id = await self._store.create_branch(
            branch_id=new_id("br"),
            conversation_id=conversation.id,
            name=name,
            parent_branch_id=active.id,
            fork_seq=seq,
            activate=True,
            request=request,
        )
        return await self.get(conversation.id), await self._store.get_branch(
            conversation.id, branch_id
        )

    async def _free_name(self, conversation_id: str, base: str) -> str:
        taken = {b.name for b in await self._store.list_branches(conversation_id)}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        return name

    async def checkout(self, ref: str, branch_ref: str) -> tuple[r.Conversation, r.Branch]:
        conversation = await self.get(ref)
        if not branch_ref:
            raise InvalidArgument("name a branch by id or name", field="branch")
        branch = await self._store.get_branch(conversation.id, branch_ref)
        idle_states = (r.IDLE, r.WAITING_FOR_USER, r.CANCELLED)
        if not await self._store.update_conversation(
            conversation.id, only_if_state=idle_states, active_branch_id=branch.id
        ):
            raise _running(conversation, "check out a branch")
        return await self.get(conversation.id), branch

    async def watch(self, ref: str, after_seq: int = 0) -> AsyncIterator[r.State]:
        """The active branch's states after `after_seq`, then live ones, until cancelled."""
        conversation = await self.get(ref)
        async for state in follow(
            self._store,
            self._feed,
            conversation_id=conversation.id,
            branch_id=conversation.active_branch_id,
            after_seq=max(after_seq, 0),
            poll_seconds=self._poll,
        ):
            yield state

    async def get_overrides(self, ref: str) -> dict[str, Any]:
        return (await self.get(ref)).overrides

    async def set_overrides(self, ref: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Replace the overrides (INVALID_ARGUMENT for an unknown tool or template)."""
        conversation = await self.get(ref)
        await self._validate_overrides(overrides)
        await self._store.update_conversation(conversation.id, overrides=overrides)
        return overrides

    async def _validate_overrides(self, overrides: dict[str, Any]) -> None:
        template = overrides.get("behavior_template", "")
        if template and not behaviors.known(template):
            known = ", ".join(sorted(behaviors.TEMPLATES))
            raise InvalidArgument(
                f"unknown behavior template {template!r} (known: {known})",
                field="overrides.behavior_template",
            )
        tools = overrides.get("tools") or []
        if tools:
            registry = await self._catalog.tools()
            unknown = [t for t in tools if t not in registry]
            if unknown:
                raise InvalidArgument(
                    f"unknown tools {', '.join(unknown)} (known: {', '.join(sorted(registry))})",
                    field="overrides.tools",
                )
        temperature = overrides.get("temperature")
        if temperature is not None and not 0.0 <= temperature <= MAX_TEMPERATURE:
            raise InvalidArgument(
                f"temperature must be between 0 and {MAX_TEMPERATURE:g}",
                field="overrides.temperature",
            )

    async def cancel(self, ref: str) -> r.Conversation:
        conversation = await self.get(ref)
        if conversation.state != r.CANCELLED:
            await self._engine.cancel_conversation(conversation.id)
        return await self.get(conversation.id)
