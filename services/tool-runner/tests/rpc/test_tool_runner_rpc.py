"""ToolService over a real socket, with a real (in-test) LedgerService behind it."""

from __future__ import annotations

import json
from decimal import Decimal

import grpc
import pytest

from p2e_kit.channels import caller_metadata, open_channel
from p2e_kit.natsd import free_port
from p2e_kit.service import grpc_serving
from p2e_kit.status import decode
from p2e_tool_runner.ledger_client import GrpcLedger
from p2e_tool_runner.server import build_runtime, registrations
from p2engine.tools.v1 import tools_pb2, tools_service_pb2, tools_service_pb2_grpc

ALPHA = caller_metadata("agent", "agent_alpha")
OPERATOR = caller_metadata("operator", "ops")
OK = tools_pb2.TOOL_RESULT_STATUS_OK
ERROR = tools_pb2.TOOL_RESULT_STATUS_ERROR


def execute_request(tool: str, args: object, request_id: str = "", conversation: str = "c1"):
    text = args if isinstance(args, str) else json.dumps(args)
    return tools_service_pb2.ExecuteToolRequest(
        tool_name=tool, arguments_json=text, conversation_id=conversation, request_id=request_id
    )


async def test_list_tools_serves_every_builtin_with_its_schema(tools) -> None:
    response = await tools.ListTools(tools_service_pb2.ListToolsRequest())
    by_name = {t.name: t for t in response.tools}
    assert list(by_name) == sorted(
        ["check_balance", "delegate", "get_weather", "transaction_history", "transfer_funds"]
    )
    assert response.next_page_token == ""
    weather = by_name["get_weather"]
    assert weather.side_effect_free and weather.cache_ttl_seconds == 300
    schema = json.loads(by_name["transfer_funds"].input_schema_json)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"to_agent", "amount"}
    assert by_name["transfer_funds"].dedup_policy == tools_pb2.DEDUP_POLICY_PENALTY


async def test_list_tools_pages(tools) -> None:
    first = await tools.ListTools(tools_service_pb2.ListToolsRequest(page_size=2))
    assert [t.name for t in first.tools] == ["check_balance", "delegate"]
    rest = await tools.ListTools(
        tools_service_pb2.ListToolsRequest(page_size=10, page_token=first.next_page_token)
    )
    assert [t.name for t in rest.tools] == ["get_weather", "transaction_history", "transfer_funds"]
    assert rest.next_page_token == ""


async def test_get_tool_and_not_found(tools) -> None:
    tool = await tools.GetTool(tools_service_pb2.GetToolRequest(name="check_balance"))
    assert tool.name == "check_balance"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tools.GetTool(tools_service_pb2.GetToolRequest(name="teleport"))
    assert decode(err.value).code == "NOT_FOUND"


async def test_execute_get_weather_caches_and_needs_no_agent(tools) -> None:
    first = await tools.ExecuteTool(
        execute_request("get_weather", {"city": "Paris"}), metadata=OPERATOR
    )
    assert first.status == OK, first.error_message
    assert json.loads(first.result_json)["city"] == "Paris"
    again = await tools.ExecuteTool(execute_request("get_weather", {"city": " Paris "}))
    assert again.cached and again.result_json == first.result_json


async def test_execute_check_balance_as_agent(tools, fake_ledger) -> None:
    result = await tools.ExecuteTool(execute_request("check_balance", {}), metadata=ALPHA)
    assert result.status == OK, result.error_message
    assert json.loads(result.result_json) == {
        "agent_id": "agent_alpha",
        "balance": "100.00",
        "asset": "P2E",
    }
    assert fake_ledger.callers("GetBalance") == {"agent:agent_alpha"}


async def test_execute_transfer_pays_once_per_request_id(tools, fake_ledger) -> None:
    request = execute_request(
        "transfer_funds", '{"to_agent": "agent_beta", "amount": 25.5}', request_id="call-t1"
    )
    first = await tools.ExecuteTool(request, metadata=ALPHA)
    assert first.status == OK, first.error_message
    body = json.loads(first.result_json)
    assert body["amount"] == "25.50" and body["from_agent"] == "agent_alpha"
    second = await tools.ExecuteTool(request, metadata=ALPHA)
    assert second.result_json == first.result_json
    assert fake_ledger.balances["agent_alpha"] == Decimal("74.50")
    assert fake_ledger.balances["agent_beta"] == Decimal("75.50")
    assert len(fake_ledger.transfers) == 1
    assert fake_ledger.seen[-1].conversation == "c1"


async def test_execute_transfer_rejects_from_agent(tools, fake_ledger) -> None:
    args = {"to_agent": "agent_alpha", "amount": "10", "from_agent": "treasurer"}
    result = await tools.ExecuteTool(execute_request("transfer_funds", args), metadata=ALPHA)
    assert result.status == ERROR
    assert result.error_code == "INVALID_ARGUMENT"
    assert "from_agent" in result.error_message
    assert fake_ledger.seen == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"to_agent": "agent_beta", "amount": "500"}, "INSUFFICIENT_FUNDS"),
        ({"to_agent": "nobody", "amount": "1"}, "WALLET_NOT_FOUND"),
        ({"to_agent": "agent_alpha", "amount": "1"}, "SELF_TRANSFER"),
        ({"to_agent": "agent_beta", "amount": "-3"}, "INVALID_ARGUMENT"),
        ({"to_agent": "agent_beta", "amount": "0.001"}, "INVALID_ARGUMENT"),
    ],
)
async def test_execute_transfer_ledger_refusals(tools, fake_ledger, args, code) -> None:
    result = await tools.ExecuteTool(execute_request("transfer_funds", args), metadata=ALPHA)
    assert result.status == ERROR
    assert result.error_code == code, result.error_message
    assert result.error_message
    assert fake_ledger.balances["agent_alpha"] == Decimal("100.00")


async def test_execute_transaction_history(tools, fake_ledger) -> None:
    for n, amount in enumerate(("1", "2", "3")):
        args = {"to_agent": "agent_beta", "amount": amount}
        request = execute_request("transfer_funds", args, request_id=f"h{n}")
        assert (await tools.ExecuteTool(request, metadata=ALPHA)).status == OK
    result = await tools.ExecuteTool(
        execute_request("transaction_history", {"limit": 2}), metadata=ALPHA
    )
    body = json.loads(result.result_json)
    assert body["count"] == 2
    assert [t["amount"] for t in body["transactions"]] == ["3.00", "2.00"]
    assert body["transactions"][0]["direction"] == "sent"
    assert fake_ledger.callers("ListTransactions") == {"agent:agent_alpha"}


async def test_execute_delegate_is_for_the_orchestrator(tools) -> None:
    args = {"agent_id": "agent_helper", "message": "weather in Tokyo?"}
    result = await tools.ExecuteTool(execute_request("delegate", args), metadata=ALPHA)
    assert result.status == ERROR
    assert result.error_code == "FAILED_PRECONDITION"
    assert result.error_message == "delegate is executed by the orchestrator"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"Paris"'])
async def test_execute_rejects_non_object_arguments(tools, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tools.ExecuteTool(execute_request("get_weather", text), metadata=ALPHA)
    details = decode(err.value)
    assert details.code == "INVALID_ARGUMENT"
    assert details.field_violations[0].field == "arguments_json"


async def test_execute_unknown_tool_is_not_found(tools) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tools.ExecuteTool(execute_request("teleport", {}), metadata=ALPHA)
    assert decode(err.value).code == "NOT_FOUND"


@pytest.mark.parametrize("metadata", [OPERATOR, None])
async def test_execute_ledger_tool_needs_an_agent_caller(tools, fake_ledger, metadata) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tools.ExecuteTool(execute_request("check_balance", {}), metadata=metadata)
    assert decode(err.value).code == "PERMISSION_DENIED"
    assert fake_ledger.seen == []


async def test_execute_bad_caller_metadata_is_invalid(tools) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tools.ExecuteTool(
            execute_request("get_weather", {"city": "Rome"}), metadata=(("p2e-caller", "alpha"),)
        )
    assert decode(err.value).code == "INVALID_ARGUMENT"


async def test_ledger_unreachable_is_dependency_unavailable(settings) -> None:
    address = f"127.0.0.1:{free_port()}"
    channel = open_channel(address)
    runtime = await build_runtime(
        settings, ledger=GrpcLedger(channel, address=address, deadline_seconds=2)
    )
    try:
        async with grpc_serving(registrations(runtime), address="127.0.0.1:0") as (port, _s, _h):
            client = open_channel(f"127.0.0.1:{port}")
            stub = tools_service_pb2_grpc.ToolServiceStub(client)
            request = execute_request("check_balance", {}, request_id="down-1")
            result = await stub.ExecuteTool(request, metadata=ALPHA)
            await client.close()
    finally:
        await runtime.close()
        await channel.close()
    assert result.status == ERROR
    assert result.error_code == "DEPENDENCY_UNAVAILABLE"
    assert address in result.error_message
