"""The one small port every model call goes through.

Messages and tools are in the OpenAI chat format (what litellm speaks):
messages: {"role": "system"|"user"|"assistant"|"tool", "content": str | None,
           "tool_calls": [...] (assistant), "tool_call_id": str (tool), "name": str (tool)}
tools:    {"type": "function", "function": {"name", "description", "parameters": <JSON schema>}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCallRequest:
    """One tool call the model asked for; `arguments` is the JSON string the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ModelReply:
    content: str | None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    model: str = ""


class ModelPort(Protocol):
    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        temperature: float | None = None,
    ) -> ModelReply: ...
