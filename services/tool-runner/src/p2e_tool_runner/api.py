"""ToolService servicer: proto <-> registry and executor, nothing else."""

from __future__ import annotations

import json

import grpc

from p2e_kit.channels import CONVERSATION_KEY, metadata_value, parse_caller
from p2e_kit.errors import PermissionDenied
from p2e_kit.ids import new_id
from p2e_tool_runner.events import result_proto
from p2e_tool_runner.executor import ExecutionRequest, Executor, parse_arguments
from p2e_tool_runner.sdk import ToolRegistry, ToolSpec
from p2engine.tools.v1 import tools_pb2, tools_service_pb2, tools_service_pb2_grpc

_DEDUP = {
    "none": tools_pb2.DEDUP_POLICY_NONE,
    "penalty": tools_pb2.DEDUP_POLICY_PENALTY,
    "strict": tools_pb2.DEDUP_POLICY_STRICT,
}


def tool_proto(spec: ToolSpec) -> tools_pb2.Tool:
    return tools_pb2.Tool(
        name=spec.name,
        description=spec.description,
        input_schema_json=json.dumps(spec.json_schema(), sort_keys=True),
        side_effect_free=spec.side_effect_free,
        cache_ttl_seconds=spec.cache_ttl,
        dedup_policy=_DEDUP[spec.dedup_policy],
    )


class ToolServicer(tools_service_pb2_grpc.ToolServiceServicer):
    def __init__(self, registry: ToolRegistry, executor: Executor) -> None:
        self._registry = registry
        self._executor = executor

    async def ListTools(
        self, request: tools_service_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tools_service_pb2.ListToolsResponse:
        specs, next_token = self._registry.page(request.page_size, request.page_token)
        return tools_service_pb2.ListToolsResponse(
            tools=[tool_proto(s) for s in specs], next_page_token=next_token
        )

    async def GetTool(
        self, request: tools_service_pb2.GetToolRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.Tool:
        return tool_proto(self._registry.get(request.name))

    async def ExecuteTool(
        self, request: tools_service_pb2.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ToolResult:
        caller = parse_caller(tuple(context.invocation_metadata() or ()))
        spec = self._registry.get(request.tool_name)
        if spec.requires_agent and not caller.is_agent:
            raise PermissionDenied(f"{spec.name} runs only as an agent (p2e-caller agent:<id>)")
        parse_arguments(request.arguments_json)
        outcome = await self._executor.execute(
            ExecutionRequest(
                call_id=request.request_id or new_id("call"),
                tool_name=spec.name,
                arguments_json=request.arguments_json,
                agent_id=caller.id if caller.is_agent else "",
                conversation_id=request.conversation_id
                or metadata_value(context.invocation_metadata(), CONVERSATION_KEY),
            )
        )
        return result_proto(outcome)
