"""States are stored first; a publication that fails stays in the outbox and is retried."""

from __future__ import annotations

import asyncio

from p2e_kit.bus import connect
from p2e_kit.db import create_engine
from p2e_orchestrator.events import ArtifactPublisher
from p2e_orchestrator.storage import Store
from p2e_orchestrator.storage import records as r
from p2engine.artifacts.v1 import artifacts_pb2


async def test_failed_publications_are_retried_by_the_outbox(nats_server, sqlite_url):
    bus = await connect(nats_server.url, "outbox-test")  # no streams yet: publishing fails
    store = Store(create_engine(sqlite_url))
    await store.create_all()
    await store.create_conversation(
        conversation_id="conv_x", branch_id="br_x", agent_id="a", name="x"
    )
    publisher = ArtifactPublisher(bus, store, produced_by="orchestrator", retry_interval=0.1)
    outbox = asyncio.create_task(publisher.run_outbox())
    try:
        state = await store.append_state(
            conversation_id="conv_x",
            branch_id="br_x",
            agent_id="a",
            new=r.NewState(r.USER_MESSAGE, text="hi"),
        )
        await publisher.publish(state)
        await asyncio.sleep(0.3)  # the outbox retried and failed too
        assert (await store.get_state(state.id)).published is False
        await bus.ensure_streams()
        for _ in range(50):
            if (await store.get_state(state.id)).published:
                break
            await asyncio.sleep(0.1)
        assert (await store.get_state(state.id)).published
        raw = await bus.js.get_last_msg("P2E_ARTIFACTS", "p2e.artifacts.conv_x.user_message")
        artifact = artifacts_pb2.Artifact.FromString(raw.data)
        assert (artifact.id, artifact.state_seq, artifact.kind) == (state.id, 1, "user_message")
    finally:
        outbox.cancel()
        await asyncio.gather(outbox, return_exceptions=True)
        await bus.close()
        await store.close()
