"""The error interceptor over a real socket: domain errors become rich statuses."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from p2e_kit.channels import caller_metadata, open_channel, parse_caller
from p2e_kit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from p2e_kit.grpc_server import Registration
from p2e_kit.service import grpc_serving
from p2e_kit.status import decode, one_line
from p2engine.tools.v1 import tools_pb2, tools_service_pb2, tools_service_pb2_grpc


class _Tools(tools_service_pb2_grpc.ToolServiceServicer):
    async def GetTool(self, request, context):
        if request.name == "bad":
            raise InvalidArgument("name is bad", field="name")
        if request.name == "broke":
            raise FailedPrecondition(
                "insufficient funds",
                reason="INSUFFICIENT_FUNDS",
                violations=[PreconditionViolation("BALANCE", "agent_alpha", "too low")],
            )
        if request.name == "crash":
            raise RuntimeError("secret detail")
        if request.name == "whoami":
            caller = parse_caller(context.invocation_metadata())
            return tools_pb2.Tool(name=str(caller))
        raise NotFound(f"tool {request.name!r} does not exist", metadata={"tool": request.name})


@pytest.fixture
async def stub():
    reg = Registration(
        tools_service_pb2_grpc.add_ToolServiceServicer_to_server,
        _Tools(),
        "p2engine.tools.v1.ToolService",
    )
    async with grpc_serving([reg], address="127.0.0.1:0") as (port, _server, _health):
        async with open_channel(f"127.0.0.1:{port}") as channel:
            yield channel


async def _fail(channel, name: str) -> grpc.aio.AioRpcError:
    client = tools_service_pb2_grpc.ToolServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.GetTool(tools_service_pb2.GetToolRequest(name=name), timeout=5)
    return info.value


async def test_not_found_carries_error_info(stub):
    err = await _fail(stub, "nope")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    details = decode(err)
    assert details.reason == "NOT_FOUND"
    assert details.metadata == {"tool": "nope"}
    assert one_line(err) == "not found: tool 'nope' does not exist"


async def test_invalid_argument_carries_field_violation(stub):
    err = await _fail(stub, "bad")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in decode(err).field_violations] == [
        ("name", "name is bad")
    ]


async def test_failed_precondition_carries_violations(stub):
    err = await _fail(stub, "broke")
    details = decode(err)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "INSUFFICIENT_FUNDS"
    assert details.precondition_violations[0].subject == "agent_alpha"


async def test_unexpected_exception_is_internal_without_detail(stub):
    err = await _fail(stub, "crash")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"


async def test_caller_metadata_round_trip(stub):
    client = tools_service_pb2_grpc.ToolServiceStub(stub)
    tool = await client.GetTool(
        tools_service_pb2.GetToolRequest(name="whoami"),
        metadata=caller_metadata("agent", "agent_alpha"),
        timeout=5,
    )
    assert tool.name == "agent:agent_alpha"


async def test_health_and_reflection_are_served(stub):
    health = health_pb2_grpc.HealthStub(stub)
    for service in ("", "p2engine.tools.v1.ToolService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    refl = reflection_pb2_grpc.ServerReflectionStub(stub)

    async def one():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in refl.ServerReflectionInfo(one()):
        names = {s.name for s in reply.list_services_response.service}
        assert "p2engine.tools.v1.ToolService" in names
        break


def test_bad_caller_metadata_is_invalid_argument():
    with pytest.raises(InvalidArgument):
        parse_caller([("p2e-caller", "root")])
    assert parse_caller([]).kind == "anonymous"
    assert parse_caller([("p2e-caller", b"operator:ana")]).is_operator


async def test_unary_calls_get_the_default_deadline():
    class _Slow(tools_service_pb2_grpc.ToolServiceServicer):
        async def GetTool(self, request, context):
            remaining = context.time_remaining()
            return tools_pb2.Tool(name=f"{remaining:.1f}")

    reg = Registration(
        tools_service_pb2_grpc.add_ToolServiceServicer_to_server,
        _Slow(),
        "p2engine.tools.v1.ToolService",
    )
    async with grpc_serving([reg], address="127.0.0.1:0") as (port, _s, _h):
        async with open_channel(f"127.0.0.1:{port}", default_deadline=3.0) as channel:
            client = tools_service_pb2_grpc.ToolServiceStub(channel)
            tool = await client.GetTool(tools_service_pb2.GetToolRequest(name="x"))
            assert 0 < float(tool.name) <= 3.0
            tool = await client.GetTool(tools_service_pb2.GetToolRequest(name="x"), timeout=30)
            assert float(tool.name) > 3.0


async def test_every_call_of_a_method_is_mapped_not_only_the_first(stub):
    """The wrapped handler is built at a method's first call and reused after it."""
    client = tools_service_pb2_grpc.ToolServiceStub(stub)
    health = health_pb2_grpc.HealthStub(stub)
    for _ in range(3):
        assert (await _fail(stub, "nope")).code() == grpc.StatusCode.NOT_FOUND
        assert (await _fail(stub, "bad")).code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await _fail(stub, "crash")).code() == grpc.StatusCode.INTERNAL
        who = await client.GetTool(
            tools_service_pb2.GetToolRequest(name="whoami"),
            metadata=caller_metadata("agent", "alpha"),
            timeout=5,
        )
        assert who.name == "agent:alpha"
        check = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
