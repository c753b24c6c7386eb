"""The orchestrator over a real socket, with a real nats-server, a test-side tool worker
(a plain nats-py pull consumer on P2E_TOOLS) and a small in-test ToolService for ListTools."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from p2e_kit.bus import Bus, connect, tool_completed_subject
from p2e_kit.errors import NotFound, Unimplemented
from p2e_kit.grpc_server import Registration
from p2e_kit.service import grpc_serving
from p2e_kit.settings import Endpoints
from p2e_orchestrator.config import Settings
from p2e_orchestrator.llm.port import ModelReply
from p2e_orchestrator.server import build
from p2e_orchestrator.testing import ScriptedModel, tool_call
from p2engine.orchestrator.v1 import orchestrator_service_pb2_grpc as orch_grpc
from p2engine.tools.v1 import events_pb2, tools_pb2, tools_service_pb2, tools_service_pb2_grpc

AGENTS_YML = """
agents:
  - id: agent_alpha
    llm_model: "openai/gpt-4o"
    tools: ["get_weather", "delegate", "check_balance", "transfer_funds"]
  - id: agent_helper
    llm_model: "openai/gpt-4o"
    behavior_template: "helpful_assistant"
    tools: ["get_weather", "check_balance"]
"""
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = {
    "get_weather": tools_pb2.Tool(
        name="get_weather", description="Weather", input_schema_json=json.dumps(SCHEMA)
    ),
    "check_balance": tools_pb2.Tool(
        name="check_balance", description="Balance", input_schema_json="{}"
    ),
    "transfer_funds": tools_pb2.Tool(
        name="transfer_funds", description="Pay", input_schema_json="{}"
    ),
    "sleepy": tools_pb2.Tool(name="sleepy", description="Never answers", input_schema_json="{}"),
}


class ToolRegistry(tools_service_pb2_grpc.ToolServiceServicer):
    """A real (small) ToolService: lists TOOLS, one per page to exercise paging."""

    async def ListTools(self, request: Any, context: Any) -> Any:
        names = sorted(TOOLS)
        start = int(request.page_token or "0")
        token = str(start + 1) if start + 1 < len(names) else ""
        return tools_service_pb2.ListToolsResponse(
            tools=[TOOLS[names[start]]], next_page_token=token
        )

    async def GetTool(self, request: Any, context: Any) -> Any:
        if request.name not in TOOLS:
            raise NotFound(f"no tool {request.name}")
        return TOOLS[request.name]

    async def ExecuteTool(self, request: Any, context: Any) -> Any:
        raise Unimplemented("the test registry only lists tools")


def script(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelReply:
    """A rule-based model: weather for each city named, balance, delegation, failure."""
    last = messages[-1]
    if last["role"] == "tool":
        results = [m["content"] for m in messages if m["role"] == "tool"]
        return ModelReply("Done: " + " | ".join(results))
    text = last["content"]
    if text == "boom":
        raise ConnectionError("the model provider is down")
    if match := re.match(r"weather in (.+)", text, re.I):
        cities = [c.strip() for c in re.split(r",| and ", match.group(1)) if c.strip()]
        return ModelReply(
            "Checking.",
            [tool_call("get_weather", {"city": c}, f"m{i}") for i, c in enumerate(cities)],
        )
    if text.startswith("slow"):
        return ModelReply(None, [tool_call("sleepy", {})])
    return ModelReply(f"Echo: {text}")


@dataclass
class ToolWorker:
    """Executes P2E_TOOLS requests like the tool-runner does and publishes completions."""

    bus: Bus
    requests: list[tuple[Any, dict[str, str]]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        sub = await self.bus.js.pull_subscribe(
            "p2e.tools.exec.>", durable="test_worker", stream="P2E_TOOLS"
        )
        while not self.stopping.is_set():
            try:
                messages = await sub.fetch(10, timeout=0.2)
            except TimeoutError:
                continue
            for msg in messages:
                await self._handle(msg)
        await sub.unsubscribe()

    async def _handle(self, msg: Any) -> None:
        request = events_pb2.ToolExecutionRequested.FromString(msg.data)
        self.requests.append((request, dict(msg.headers or {})))
        if request.tool_name != "sleepy":
            result = tools_pb2.ToolResult(
                call_id=request.call_id,
                tool_name=request.tool_name,
                status=tools_pb2.TOOL_RESULT_STATUS_OK,
                result_json=json.dumps(
                    {**json.loads(request.arguments_json or "{}"), "ran_as": request.agent_id}
                ),
            )
            completed = events_pb2.ToolExecutionCompleted(
                result=result, agent_id=request.agent_id, conversation_id=request.conversation_id
            )
            await self.bus.publish(
                tool_completed_subject(request.call_id), completed, msg_id=request.call_id
            )
        await msg.ack()


@dataclass
class Running:
    conversations: orch_grpc.ConversationServiceStub
    agents: orch_grpc.AgentServiceStub
    worker: ToolWorker
    model: Any
    app: Any
    nats_url: str


@pytest.fixture
async def tool_registry_addr() -> AsyncIterator[str]:
    registration = Registration(
        tools_service_pb2_grpc.add_ToolServiceServicer_to_server,
        ToolRegistry(),
        "p2engine.tools.v1.ToolService",
    )
    async with grpc_serving([registration], address="127.0.0.1:0") as (port, _server, _health):
        yield f"127.0.0.1:{port}"


@pytest.fixture
def model() -> Any:
    """The ModelPort under the orchestrator; a test module may override this fixture."""
    return ScriptedModel(script)


@pytest.fixture
async def orchestrator(
    tmp_path: Path, nats_server: Any, bus: Bus, tool_registry_addr: str, model: Any
) -> AsyncIterator[Running]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "agents.yml").write_text(AGENTS_YML)
    settings = Settings(
        port=0, data_dir=tmp_path / "data", config_dir=config_dir, nats_url=nats_server.url,
        tool_timeout_seconds=1.5, watch_poll_seconds=0.3,
    )  # fmt: skip
    worker = ToolWorker(bus)
    worker_task = asyncio.create_task(worker.run())
    own_bus = await connect(nats_server.url, "orchestrator-under-test")
    app = await build(
        settings,
        bus=own_bus,
        model=model,
        resolve_model=lambda configured: "offline/p2e",
        endpoints=Endpoints(tool_runner_addr=tool_registry_addr),
    )
    await app.start_background()
    try:
        async with grpc_serving(app.registrations, address="127.0.0.1:0") as (
            port,
            _server,
            _health,
        ):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Running(
                    orch_grpc.ConversationServiceStub(channel),
                    orch_grpc.AgentServiceStub(channel),
                    worker,
                    model,
                    app,
                    nats_server.url,
                )
    finally:
        await app.close()
        await own_bus.close()
        worker.stopping.set()
        await worker_task
