"""The tool registry as the orchestrator sees it: schemas from the tool-runner's ListTools.

The `delegate` tool is executed here, not by the tool-runner; its schema normally comes from
the tool-runner's list too, with `DELEGATE` below as the fallback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from p2e_kit.errors import DependencyUnavailable

log = logging.getLogger(__name__)

DELEGATE_TOOL = "delegate"
LIST_TOOLS_DEADLINE_SECONDS = 5.0


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The OpenAI / litellm function-tool form."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


DELEGATE = ToolSpec(
    name=DELEGATE_TOOL,
    description="Hand a task to another agent and get its answer back.",
    parameters={
        "type": "object",
        "properties": {
            "agent_id": {"type": "string", "description": "The agent to delegate to."},
            "message": {"type": "string", "description": "What the agent should do."},
        },
        "required": ["agent_id", "message"],
    },
)


class ToolCatalog(Protocol):
    async def tools(self) -> dict[str, ToolSpec]:
        """Every registered tool by name. Raises DependencyUnavailable when unreachable."""
        ...


def with_builtins(found: dict[str, ToolSpec]) -> dict[str, ToolSpec]:
    return {DELEGATE_TOOL: DELEGATE, **found}


def spec_from_proto(tool: Any) -> ToolSpec:
    try:
        parameters = json.loads(tool.input_schema_json) if tool.input_schema_json else {}
    except ValueError:
        log.warning(
            "tool %s has an input schema that is not JSON; offering no parameters", tool.name
        )
        parameters = {}
    if not isinstance(parameters, dict) or not parameters:
        parameters = {"type": "object", "properties": {}}
    return ToolSpec(tool.name, tool.description, parameters)


class GrpcToolCatalog:
    """ListTools over gRPC, fetched at first use and cached; a failure is not cached."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._cached: dict[str, ToolSpec] | None = None
        self._lock = asyncio.Lock()
        self._channel: Any = None

    async def tools(self) -> dict[str, ToolSpec]:
        if self._cached is not None:
            return self._cached
        async with self._lock:
            if self._cached is None:
                self._cached = with_builtins(await self._fetch())
                log.info("tool registry: %s", ", ".join(sorted(self._cached)))
        return self._cached

    async def _fetch(self) -> dict[str, ToolSpec]:
        import grpc

        from p2e_kit.channels import open_channel
        from p2engine.tools.v1 import tools_service_pb2, tools_service_pb2_grpc

        if self._channel is None:
            self._channel = open_channel(self._address)
        stub: Any = tools_service_pb2_grpc.ToolServiceStub(self._channel)
        found: dict[str, ToolSpec] = {}
        token = ""
        try:
            while True:
                reply = await stub.ListTools(
                    tools_service_pb2.ListToolsRequest(page_token=token),
                    timeout=LIST_TOOLS_DEADLINE_SECONDS,
                )
                found.update({t.name: spec_from_proto(t) for t in reply.tools})
                token = reply.next_page_token
                if not token:
                    return found
        except grpc.RpcError as exc:
            raise DependencyUnavailable(
                f"cannot list tools from the tool-runner at {self._address}: "
                f"{exc.code().name if hasattr(exc, 'code') else exc}",
                reason="TOOL_RUNNER_UNAVAILABLE",
            ) from exc

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
