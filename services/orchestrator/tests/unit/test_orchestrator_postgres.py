"""The same store and turn loop on PostgreSQL (skips when no local server is reachable)."""

from __future__ import annotations

import json

import pytest

from p2e_kit.appconfig import AgentConfig
from p2e_orchestrator.llm.port import ModelReply
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.testing import InMemoryToolDispatcher, ScriptedModel, harness, tool_call
from p2e_orchestrator.tool_catalog import ToolSpec
from p2e_orchestrator.tool_dispatch import ToolOutcome

pytestmark = pytest.mark.postgres


async def test_turn_and_fork_on_postgres(postgres_url):
    model = ScriptedModel(
        replies=[
            ModelReply(None, [tool_call("get_weather", {"city": "Oslo"})]),
            ModelReply("Cold."),
        ]
    )
    dispatcher = InMemoryToolDispatcher({"get_weather": lambda i: ToolOutcome.success('{"t": -3}')})
    h = await harness(
        postgres_url,
        agents=[AgentConfig(id="agent_alpha", tools=["get_weather"])],
        model=model,
        dispatcher=dispatcher,
        tools=[ToolSpec("get_weather", "Weather", {"type": "object", "properties": {}})],
    )
    try:
        conversation = await h.conversations.create("agent_alpha", "pg", request_id="pg-1")
        events = [e async for e in h.turns.send("pg", "Weather in Oslo?", "send-1")]
        states = [e for e in events if isinstance(e, r.State)]
        assert [s.seq for s in states] == [1, 2, 3, 4, 5, 6]
        assert json.loads(states[3].data_json) == {"t": -3}
        assert (await h.store.get_effect(states[2].id)).status == r.COMPLETED
        _, fork = await h.conversations.rewind("pg", 1)
        assert [s.seq for s in await h.store.visible_states(fork.id)] == [1]
        page = await h.conversations.list()
        assert [c.id for c in page.items] == [conversation.id]
        assert (await h.store.get_conversation("pg")).state == r.IDLE
    finally:
        await h.close()
