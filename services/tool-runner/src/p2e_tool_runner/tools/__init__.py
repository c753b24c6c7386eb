"""The built-in tools. `server.build_registry` collects them into a `ToolRegistry`."""

from __future__ import annotations

from types import ModuleType

from p2e_tool_runner.tools import delegate, ledger_tools, weather

BUILTIN_TOOL_MODULES: tuple[ModuleType, ...] = (weather, ledger_tools, delegate)
