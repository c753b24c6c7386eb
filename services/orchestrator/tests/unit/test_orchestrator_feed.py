"""Followers: states from the in-process feed, the database on a gap; batched appends."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from p2e_kit.appconfig import AgentConfig
from p2e_orchestrator.feed import ChangeFeed, follow
from p2e_orchestrator.storage import records as r
from p2e_orchestrator.testing import ScriptedModel, harness

AGENTS = [AgentConfig(id="agent_alpha", tools=["get_weather"])]


@pytest.fixture
async def h(sqlite_url):
    built = await harness(sqlite_url, agents=AGENTS, model=ScriptedModel(replies=[]))
    yield built
    await built.close()


class CountingStore:
    """The harness store, counting the follower's database reads."""

    def __init__(self, store) -> None:
        self.store, self.reads = store, 0

    async def visible_states(self, branch_id, *, after_seq=0):
        self.reads += 1
        return await self.store.visible_states(branch_id, after_seq=after_seq)


async def append(h, conv, text):
    return await h.store.append_state(
        conversation_id=conv.id,
        branch_id=conv.active_branch_id,
        agent_id=conv.agent_id,
        new=r.NewState(r.USER_MESSAGE, text=text),
    )


async def test_follower_takes_notified_states_and_reads_the_database_on_a_gap(h):
    conv = await h.conversations.create("agent_alpha", "c1")
    feed, counting = ChangeFeed(), CountingStore(h.store)
    first = await append(h, conv, "before")
    states = follow(
        counting,  # type: ignore[arg-type]
        feed,
        conversation_id=conv.id,
        branch_id=conv.active_branch_id,
        after_seq=0,
        poll_seconds=30.0,
    )
    async with contextlib.aclosing(states):
        assert (await anext(states)).id == first.id
        assert counting.reads == 1
        second = await append(h, conv, "notified")
        feed.notify(conv.id, second)
        assert (await anext(states)).id == second.id
        assert counting.reads == 1  # from the feed, not read back
        await append(h, conv, "elsewhere")  # stored, not notified: a gap
        fourth = await append(h, conv, "notified after the gap")
        feed.notify(conv.id, fourth)
        got = [await anext(states), await anext(states)]
        assert [s.text for s in got] == ["elsewhere", "notified after the gap"]
        assert counting.reads == 2
        pending = asyncio.ensure_future(anext(states))
        await asyncio.sleep(0.05)
        assert not pending.done()
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending


async def test_append_states_stores_a_reply_and_its_calls_in_order(h):
    conv = await h.conversations.create("agent_alpha", "c2")
    states = await h.store.append_states(
        conversation_id=conv.id,
        branch_id=conv.active_branch_id,
        agent_id=conv.agent_id,
        items=[
            (r.NewState(r.ASSISTANT_MESSAGE, text="calling"), None),
            (
                r.NewState(r.TOOL_CALL, id="st_call", call_id="st_call", target="get_weather"),
                r.NewEffect(kind="tool", request_json="{}"),
            ),
        ],
    )
    assert [(s.seq, s.parent_id) for s in states] == [(1, ""), (2, states[0].id)]
    assert await h.store.visible_states(conv.active_branch_id) == states
    effect = await h.store.get_effect("st_call")
    assert effect is not None and effect.status == r.PENDING
