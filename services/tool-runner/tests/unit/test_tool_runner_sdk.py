"""The tool SDK: decorator checks, registry collection, schemas, paging."""

from __future__ import annotations

import types

import pytest
from pydantic import BaseModel, ConfigDict

from p2e_kit.errors import InvalidArgument, NotFound
from p2e_tool_runner.config import Settings
from p2e_tool_runner.sdk import ToolContext, ToolRegistry, function_tool, spec_of
from p2e_tool_runner.server import build_registry
from p2e_tool_runner.tools import BUILTIN_TOOL_MODULES


class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str


class LooseArgs(BaseModel):
    text: str


def make_module(*fns: object) -> types.ModuleType:
    module = types.ModuleType("plugin_tools")
    for n, fn in enumerate(fns):
        setattr(module, f"fn{n}", fn)
    module.not_a_tool = lambda: None  # type: ignore[attr-defined]
    return module


def echo_tool(name: str = "echo"):
    @function_tool(name=name, description="Echo text.", input_schema=EchoArgs)
    async def echo(ctx: ToolContext, args: EchoArgs) -> dict[str, str]:
        return {"text": args.text}

    return echo


def test_decorator_records_a_spec_without_registering_anywhere() -> None:
    fn = echo_tool()
    spec = spec_of(fn)
    assert spec is not None
    assert (spec.name, spec.dedup_policy, spec.cache_ttl, spec.side_effect_free) == (
        "echo",
        "none",
        0,
        False,
    )
    assert len(ToolRegistry()) == 0


def test_registry_collects_decorated_functions_of_modules() -> None:
    registry = ToolRegistry.from_modules([make_module(echo_tool("a"), echo_tool("b"))])
    assert [s.name for s in registry.list()] == ["a", "b"]
    assert "a" in registry and "zzz" not in registry
    assert registry.find("zzz") is None
    with pytest.raises(NotFound):
        registry.get("zzz")


def test_registry_refuses_two_tools_with_one_name() -> None:
    registry = ToolRegistry([spec_of(echo_tool())])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(echo_tool())


def test_registry_refuses_undecorated_functions() -> None:
    async def plain(ctx, args) -> None:
        return None

    with pytest.raises(TypeError, match="not decorated"):
        ToolRegistry().register(plain)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "bad name"}, ValueError),
        ({"input_schema": LooseArgs}, ValueError),
        ({"input_schema": dict}, TypeError),
        ({"dedup_policy": "sometimes"}, ValueError),
        ({"cache_ttl": 60}, ValueError),  # caching a side-effecting tool
        ({"cache_ttl": -1, "side_effect_free": True}, ValueError),
    ],
)
def test_decorator_rejects_bad_metadata(kwargs: dict[str, object], error: type) -> None:
    options: dict[str, object] = {"name": "t", "description": "d", "input_schema": EchoArgs}
    options.update(kwargs)

    async def tool(ctx, args) -> None:
        return None

    with pytest.raises(error):
        function_tool(**options)(tool)  # type: ignore[arg-type]


def test_decorator_rejects_sync_functions() -> None:
    def sync_tool(ctx, args) -> None:
        return None

    with pytest.raises(TypeError, match="async def"):
        function_tool(name="t", description="d", input_schema=EchoArgs)(sync_tool)  # type: ignore[arg-type]


def test_builtin_registry_and_schemas() -> None:
    registry = ToolRegistry.from_modules(BUILTIN_TOOL_MODULES)
    assert [s.name for s in registry.list()] == [
        "check_balance",
        "delegate",
        "get_weather",
        "transaction_history",
        "transfer_funds",
    ]
    for spec in registry.list():
        schema = spec.json_schema()
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert "title" not in schema
    weather = registry.get("get_weather")
    assert weather.side_effect_free and weather.cache_ttl == 300
    assert registry.get("transfer_funds").requires_agent
    assert not registry.get("transfer_funds").side_effect_free
    amount = registry.get("transfer_funds").json_schema()["properties"]["amount"]
    assert {option["type"] for option in amount["anyOf"]} == {"number", "string"}
    limit = registry.get("transaction_history").json_schema()["properties"]["limit"]
    assert (limit["default"], limit["minimum"], limit["maximum"]) == (10, 1, 100)


PLUGIN = """
from pydantic import BaseModel, ConfigDict
from p2e_tool_runner.sdk import function_tool


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


@function_tool(name="plugin_echo", description="A plugin tool.", input_schema=Args)
async def plugin_echo(ctx, args):
    return {"ok": True}
"""


def test_build_registry_imports_extra_modules(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p2e_test_plugin_tools.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry(Settings(tool_modules=["p2e_test_plugin_tools"]))
    assert "plugin_echo" in registry and "get_weather" in registry


def test_validate_names_each_bad_field() -> None:
    spec = ToolRegistry.from_modules(BUILTIN_TOOL_MODULES).get("transfer_funds")
    with pytest.raises(InvalidArgument) as err:
        spec.validate({"to_agent": "b", "amount": "x", "from_agent": "treasurer"})
    fields = {v.field for v in err.value.violations}
    assert fields == {"amount", "from_agent"}
    assert "from_agent" in err.value.message


def test_paging_by_name() -> None:
    registry = ToolRegistry.from_modules(BUILTIN_TOOL_MODULES)
    page, token = registry.page(2, "")
    assert [s.name for s in page] == ["check_balance", "delegate"] and token == "delegate"
    page, token = registry.page(0, token)
    assert [s.name for s in page] == ["get_weather", "transaction_history", "transfer_funds"]
    assert token == ""
    with pytest.raises(InvalidArgument):
        registry.page(-1, "")
