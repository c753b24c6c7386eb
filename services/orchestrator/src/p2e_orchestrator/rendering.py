"""A branch's stack as OpenAI chat messages, and what a turn still has to do.

- user messages (and answers to the agent's questions) -> role "user"
- assistant messages -> role "assistant", with the tool calls they asked for
- tool and agent results -> role "tool", with the model's tool_call id and function name
- call states, waiting and finished states carry nothing new for the model.

An assistant message whose calls have no result (the branch was rewound between a call and
its result, or a turn was cancelled) gets a synthetic error result, so the message list
stays valid for every provider.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from p2e_orchestrator.storage import records as r

NO_RESULT = json.dumps({"error": "NO_RESULT", "message": "the call never returned a result"})


@dataclass(frozen=True)
class AskedCall:
    """One tool call of an assistant message, as stored in its data_json."""

    model_id: str  # the id the model gave the call
    call_id: str  # our id: the call state's id
    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.model_id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
        }


def asked_calls(state: r.State) -> list[AskedCall]:
    """The calls an assistant message asked for ([] for other states)."""
    if state.kind != r.ASSISTANT_MESSAGE:
        return []
    data = state.data()
    calls = data.get("tool_calls", []) if isinstance(data, dict) else []
    return [
        AskedCall(
            str(c.get("id", "")),
            str(c.get("call_id", "")),
            str(c.get("name", "")),
            str(c.get("arguments", "")),
        )
        for c in calls
        if isinstance(c, dict)
    ]


def _assistant(state: r.State, calls: list[AskedCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": state.text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": c.model_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in calls
        ]
    return message


def _tool(call: AskedCall, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call.model_id, "name": call.name, "content": content}


def render_messages(system_prompt: str, stack: list[r.State]) -> list[dict[str, Any]]:
    """The stack, oldest first, as the message list of a chat completion."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    open_calls: dict[str, AskedCall] = {}  # call id -> call, of the latest assistant message

    def close_open_calls() -> None:
        messages.extend(_tool(call, NO_RESULT) for call in open_calls.values())
        open_calls.clear()

    for state in stack:
        if state.kind in (r.USER_MESSAGE, r.USER_INPUT_RESPONSE):
            close_open_calls()
            messages.append({"role": "user", "content": state.text})
        elif state.kind == r.ASSISTANT_MESSAGE:
            close_open_calls()
            calls = asked_calls(state)
            messages.append(_assistant(state, calls))
            open_calls = {c.call_id: c for c in calls}
        elif state.kind in r.RESULT_KINDS and state.call_id in open_calls:
            messages.append(_tool(open_calls.pop(state.call_id), state.data_json or state.text))
    close_open_calls()
    return messages


def turn_start(stack: list[r.State]) -> int:
    """Index of the message that opened the current turn (0 when there is none)."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index].kind in (r.USER_MESSAGE, r.USER_INPUT_RESPONSE):
            return index
    return 0


def unanswered_calls(turn: list[r.State]) -> list[r.State]:
    """Call states of the turn that have no result yet, in order."""
    answered = {s.call_id for s in turn if s.kind in r.RESULT_KINDS}
    return [s for s in turn if s.kind in r.CALL_KINDS and s.call_id not in answered]


def counts(turn: list[r.State]) -> tuple[int, int]:
    """(model calls, tool calls) made so far in the turn."""
    model_calls = sum(1 for s in turn if s.kind == r.ASSISTANT_MESSAGE)
    tool_calls = sum(1 for s in turn if s.kind in r.CALL_KINDS)
    return model_calls, tool_calls
