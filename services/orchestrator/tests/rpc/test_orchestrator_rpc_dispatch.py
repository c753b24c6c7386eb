"""The JetStream dispatch port on its own: round trip, stray completions, resume after restart."""

from __future__ import annotations

import asyncio
import json

from p2e_kit.bus import tool_completed_subject
from p2e_orchestrator.tool_dispatch import JetStreamToolDispatcher, ToolInvocation
from p2engine.tools.v1 import events_pb2, tools_pb2


def invocation(call_id: str) -> ToolInvocation:
    return ToolInvocation(
        call_id, "get_weather", '{"city": "Oslo"}', "agent_alpha", "conv_1", "br_1", call_id
    )


def completed(call_id: str, payload: dict) -> events_pb2.ToolExecutionCompleted:
    result = tools_pb2.ToolResult(
        call_id=call_id,
        tool_name="get_weather",
        status=tools_pb2.TOOL_RESULT_STATUS_OK,
        result_json=json.dumps(payload),
    )
    return events_pb2.ToolExecutionCompleted(
        result=result, agent_id="agent_alpha", conversation_id="conv_1"
    )


async def test_round_trip_and_resume(bus):
    dispatcher = JetStreamToolDispatcher(bus)
    await dispatcher.start()
    try:
        requests = await bus.js.pull_subscribe(
            "p2e.tools.exec.>", durable="probe", stream="P2E_TOOLS"
        )
        running = asyncio.create_task(dispatcher.run(invocation("st_a")))
        [msg] = await requests.fetch(1, timeout=5)
        request = events_pb2.ToolExecutionRequested.FromString(msg.data)
        assert (request.call_id, msg.headers["Nats-Msg-Id"], request.agent_id) == (
            "st_a",
            "st_a",
            "agent_alpha",
        )
        await msg.ack()
        # a completion nobody waits for is ignored
        await bus.publish(tool_completed_subject("st_other"), completed("st_other", {}), "st_other")
        await bus.publish(tool_completed_subject("st_a"), completed("st_a", {"temp": 1}), "st_a")
        outcome = await asyncio.wait_for(running, 5)
        assert outcome.ok and json.loads(outcome.result_json) == {"temp": 1}
        # after a restart, a call that already completed is not dispatched again
        resumed = await asyncio.wait_for(dispatcher.run(invocation("st_a"), resume=True), 5)
        assert resumed == outcome
        info = await bus.js.consumer_info("P2E_TOOLS", "probe")
        assert info.num_pending == 0  # nothing was published for the resumed call
    finally:
        await dispatcher.stop()
