"""How the offline model reads a conversation: the current turn, its rounds and their results.

A *turn* starts at the latest user message. Each assistant message with `tool_calls` after
it is one *round*; the `tool` messages answer its calls by `tool_call_id`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_SELF_ID_PATTERNS = (
    re.compile(r"\b(?:agent[ _]?id|your id)\s*(?:is|:|=)?\s*[`'\"*]*([A-Za-z][\w-]*)", re.I),
    re.compile(r"\byou are\s+[`'\"*]*([A-Za-z][\w-]*_[\w-]*)", re.I),
    re.compile(r"\byou are\s+[`'\"*]*([A-Za-z][\w-]*)[`'\"*]*,", re.I),
)
_CODE = re.compile(r"[A-Z][A-Z0-9_]+")
_ERROR_STATUSES = {"error", "failed", "failure", "tool_result_status_error"}
_WRAPPER_KEYS = ("result", "data", "output", "result_json")


@dataclass(frozen=True)
class Call:
    """A tool call the model wants (name and decoded arguments)."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """A tool result as the model reads it."""

    ok: bool
    data: Any = None
    error: str = ""
    code: str = ""


@dataclass(frozen=True)
class Done:
    """A call made earlier in this turn, with its outcome (None while none arrived)."""

    call: Call
    outcome: Outcome | None


@dataclass(frozen=True)
class Turn:
    request: str
    system: str
    history: list[Any]
    rounds: list[list[Done]]
    tools: dict[str, dict[str, Any]]
    self_id: str | None = None

    def offers(self, name: str) -> bool:
        return name in self.tools


def text_of(content: Any) -> str:
    """Message content as text (plain string or a list of OpenAI content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "\n".join(part for part in parts if part)
    return str(content)


def _get(message: Any, key: str) -> Any:
    if isinstance(message, dict):
        return message.get(key)
    return getattr(message, key, None)


def decode_call(raw: Any) -> tuple[str, Call]:
    """(id, Call) from an OpenAI tool_call (dict or object); bad JSON arguments read as {}."""
    function = _get(raw, "function") or {}
    name = str(_get(function, "name") or "")
    arguments = _get(function, "arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    return str(_get(raw, "id") or ""), Call(name, arguments)


def _loads_deep(value: Any) -> Any:
    """JSON-decode strings that hold JSON (results are often JSON inside JSON)."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _error_from(data: dict[str, Any]) -> Outcome | None:
    """An error envelope: {"error": "CODE", "message"}, {"status": "error", "error_code",
    "error_message"} or {"error": {"code", "message"}}; None for a success."""
    error = data.get("error")
    code = str(data.get("error_code") or "")
    message = str(data.get("error_message") or "")
    if isinstance(error, dict):
        code = code or str(error.get("code") or "")
        message = message or str(error.get("message") or "")
    elif isinstance(error, str) and _CODE.fullmatch(error):
        code = code or error
    elif error:
        message = message or str(error)
    status = str(data.get("status", "")).lower()
    if not (status in _ERROR_STATUSES or error or code or message):
        return None
    message = message or str(data.get("message") or data.get("detail") or "")
    return Outcome(ok=False, data=data, error=message, code=code)


def parse_outcome(content: Any) -> Outcome:
    """Read a tool message: JSON results, `{"status": "error", ...}` envelopes, or plain text."""
    text = text_of(content)
    data = _loads_deep(text)
    if isinstance(data, dict):
        failed = _error_from(data)
        if failed:
            return failed
        for key in _WRAPPER_KEYS:
            inner = _loads_deep(data.get(key))
            if isinstance(inner, dict | list):
                return Outcome(ok=True, data=inner)
        return Outcome(ok=True, data=data)
    if isinstance(data, str) and re.match(r"\s*error\b", data, re.I):
        return Outcome(
            ok=False, data=data, error=re.sub(r"^\s*error\s*:?\s*", "", data, flags=re.I)
        )
    return Outcome(ok=True, data=data)


def offered_tools(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """name -> function spec, for OpenAI `tools` entries (or bare function specs)."""
    offered: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        spec = tool.get("function", tool) if isinstance(tool, dict) else {}
        if isinstance(spec, dict) and spec.get("name"):
            offered[str(spec["name"])] = spec
    return offered


def _self_id(system: str) -> str | None:
    for pattern in _SELF_ID_PATTERNS:
        found = pattern.search(system)
        if found:
            return found.group(1)
    return None


def _rounds(messages: list[Any]) -> list[list[Done]]:
    calls: list[list[tuple[str, Call]]] = []
    results: dict[str, Outcome] = {}
    for message in messages:
        role = _get(message, "role")
        if role == "assistant" and _get(message, "tool_calls"):
            calls.append([decode_call(raw) for raw in _get(message, "tool_calls")])
        elif role == "tool":
            results[str(_get(message, "tool_call_id") or "")] = parse_outcome(
                _get(message, "content")
            )
    return [[Done(call, results.get(call_id)) for call_id, call in batch] for batch in calls]


def parse_turn(messages: list[Any], tools: list[dict[str, Any]] | None) -> Turn:
    last_user = max((i for i, m in enumerate(messages) if _get(m, "role") == "user"), default=-1)
    system = "\n".join(text_of(_get(m, "content")) for m in messages if _get(m, "role") == "system")
    request = text_of(_get(messages[last_user], "content")) if last_user >= 0 else ""
    rounds = _rounds(messages[last_user + 1 :])
    history = list(messages[: max(last_user, 0)])
    return Turn(
        request=request.strip(),
        system=system,
        history=history,
        rounds=rounds,
        tools=offered_tools(tools),
        self_id=_self_id(system),
    )


def delegations(turn: Turn) -> list[tuple[str, Outcome | None]]:
    """Every delegation in the conversation, oldest first: (agent_id, outcome)."""
    found: list[tuple[str, Outcome | None]] = []
    history_rounds = _rounds(turn.history)
    for batch in [*history_rounds, *turn.rounds]:
        for done in batch:
            agent = done.call.args.get("agent_id") if done.call.name == "delegate" else None
            if isinstance(agent, str) and agent:
                found.append((agent, done.outcome))
    return found


def last_question(turn: Turn) -> tuple[str, str] | None:
    """(earlier request, question) when the model's last message asked the user something."""
    if not turn.history or _get(turn.history[-1], "role") != "assistant":
        return None
    question = text_of(_get(turn.history[-1], "content")).strip()
    if "?" not in question or _get(turn.history[-1], "tool_calls"):
        return None
    users = [m for m in turn.history if _get(m, "role") == "user"]
    return (text_of(_get(users[-1], "content")) if users else ""), question
