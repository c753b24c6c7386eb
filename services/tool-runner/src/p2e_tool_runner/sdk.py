"""The tool SDK: `@function_tool`, `ToolSpec`, `ToolContext` and `ToolRegistry`.

A tool is an async function `(ctx: ToolContext, args: <pydantic model>) -> JSON-able value`.
The decorator only records a `ToolSpec` on the function; a `ToolRegistry` instance collects
the specs of the modules it is given (there is no global registry):

    class WeatherArgs(BaseModel):
        model_config = ConfigDict(extra="forbid")
        city: str

    @function_tool(name="get_weather", description="...", input_schema=WeatherArgs,
                   side_effect_free=True, cache_ttl=300)
    async def get_weather(ctx: ToolContext, args: WeatherArgs) -> dict: ...

    registry = ToolRegistry.from_modules([weather_module])

A tool reports a failure by raising a kit `P2EError`; its `reason` becomes the result's
`error_code`. The caller's identity is `ctx.agent_id`, set by the runtime, never by arguments.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from p2e_kit.errors import DependencyUnavailable, FieldViolation, InvalidArgument, NotFound
from p2e_tool_runner.ports import LedgerPort

DedupPolicyName = Literal["none", "penalty", "strict"]
DEDUP_POLICIES: tuple[str, ...] = ("none", "penalty", "strict")
TOOL_ATTR = "__p2e_tool__"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ToolFn = Callable[["ToolContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class ToolContext:
    """What a running tool knows about its call, and the ports it may use."""

    agent_id: str
    conversation_id: str
    call_id: str
    branch_id: str = ""
    ledger: LedgerPort | None = None

    def ledger_port(self) -> LedgerPort:
        if self.ledger is None:
            raise DependencyUnavailable(
                "the ledger is not configured in this tool-runner",
                reason="DEPENDENCY_UNAVAILABLE",
            )
        return self.ledger


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool: its metadata and the function that runs it."""

    name: str
    description: str
    input_schema: type[BaseModel]
    fn: ToolFn
    cache_ttl: int = 0
    side_effect_free: bool = False
    dedup_policy: str = "none"
    requires_agent: bool = False

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments (what ListTools serves to models)."""
        schema = self.input_schema.model_json_schema()
        schema.pop("title", None)
        return schema

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        """Arguments as the input model; InvalidArgument naming each bad field."""
        try:
            return self.input_schema.model_validate(arguments)
        except ValidationError as exc:
            violations = [
                FieldViolation(".".join(str(p) for p in err["loc"]) or "arguments", err["msg"])
                for err in exc.errors()
            ]
            summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
            raise InvalidArgument(
                f"invalid arguments for {self.name}: {summary}", violations=violations
            ) from None


def _check_spec(spec: ToolSpec) -> None:
    if not _NAME_RE.match(spec.name):
        raise ValueError(f"tool name {spec.name!r}: want 1-64 letters, digits, '_' or '-'")
    if not inspect.iscoroutinefunction(spec.fn):
        raise TypeError(f"tool {spec.name}: the function must be `async def`")
    if not (isinstance(spec.input_schema, type) and issubclass(spec.input_schema, BaseModel)):
        raise TypeError(f"tool {spec.name}: input_schema must be a pydantic model class")
    if spec.input_schema.model_config.get("extra") != "forbid":
        raise ValueError(f"tool {spec.name}: input_schema must set extra='forbid'")
    if spec.dedup_policy not in DEDUP_POLICIES:
        raise ValueError(f"tool {spec.name}: dedup_policy must be one of {DEDUP_POLICIES}")
    if spec.cache_ttl < 0:
        raise ValueError(f"tool {spec.name}: cache_ttl must be >= 0")
    if spec.cache_ttl and not spec.side_effect_free:
        raise ValueError(f"tool {spec.name}: only side_effect_free tools may be cached")


def function_tool(
    *,
    name: str,
    description: str,
    input_schema: type[BaseModel],
    cache_ttl: int = 0,
    side_effect_free: bool = False,
    dedup_policy: DedupPolicyName = "none",
    requires_agent: bool = False,
) -> Callable[[ToolFn], ToolFn]:
    """Mark an async function as a tool; a `ToolRegistry` collects it from its module.

    `requires_agent`: the tool acts on the caller's own resources (wallet) and needs an
    agent identity.
    """

    def decorate(fn: ToolFn) -> ToolFn:
        spec = ToolSpec(
            name=name,
            description=description,
            input_schema=input_schema,
            fn=fn,
            cache_ttl=cache_ttl,
            side_effect_free=side_effect_free,
            dedup_policy=dedup_policy,
            requires_agent=requires_agent,
        )
        _check_spec(spec)
        setattr(fn, TOOL_ATTR, spec)
        return fn

    return decorate


def spec_of(obj: Any) -> ToolSpec | None:
    """The ToolSpec recorded on a decorated function, if any."""
    spec = getattr(obj, TOOL_ATTR, None)
    return spec if isinstance(spec, ToolSpec) else None


class ToolRegistry:
    """The tools one tool-runner serves, by name."""

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._tools: dict[str, ToolSpec] = {}
        for spec in specs:
            self.register(spec)

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType]) -> ToolRegistry:
        registry = cls()
        for module in modules:
            registry.add_module(module)
        return registry

    def register(self, tool: ToolSpec | ToolFn) -> ToolSpec:
        spec = tool if isinstance(tool, ToolSpec) else spec_of(tool)
        if spec is None:
            raise TypeError(f"{tool!r} is not decorated with @function_tool")
        _check_spec(spec)
        if spec.name in self._tools and self._tools[spec.name] is not spec:
            raise ValueError(f"tool {spec.name!r} is registered twice")
        self._tools[spec.name] = spec
        return spec

    def add_module(self, module: ModuleType) -> list[ToolSpec]:
        """Register every decorated function defined in `module`."""
        found = [spec for value in vars(module).values() if (spec := spec_of(value)) is not None]
        return [self.register(spec) for spec in found]

    def find(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def get(self, name: str) -> ToolSpec:
        spec = self._tools.get(name)
        if spec is None:
            raise NotFound(f"no tool named {name!r}")
        return spec

    def list(self) -> list[ToolSpec]:
        return [self._tools[name] for name in sorted(self._tools)]

    def page(self, page_size: int, page_token: str) -> tuple[list[ToolSpec], str]:
        """A page of tools by name after `page_token` (the last name of the previous page)."""
        if page_size < 0:
            raise InvalidArgument("page_size must be >= 0", field="page_size")
        rest = [spec for spec in self.list() if not page_token or spec.name > page_token]
        if page_size == 0 or page_size >= len(rest):
            return rest, ""
        items = rest[:page_size]
        return items, items[-1].name

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)
