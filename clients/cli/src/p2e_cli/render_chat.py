"""Rich views of agents, conversations, branches and interaction states (chat lines)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from p2e_cli.render import enum_label, key_values, shorten, styled, table, when


def agents_table(agents: Sequence[Any]) -> Table:
    return table(
        "Agents",
        ["agent", "type", "model", "answers with", "behavior", "tools"],
        [
            (
                a.id,
                a.type,
                a.llm_model,
                a.effective_model,
                a.behavior_template,
                ", ".join(a.tools),
            )
            for a in agents
        ],
    )


def conversation_state(conversation: Any) -> str:
    from p2engine.orchestrator.v1 import orchestrator_pb2

    return enum_label(
        orchestrator_pb2.ConversationState, conversation.state, "CONVERSATION_STATE_"
    ).lower()


def conversations_table(conversations: Sequence[Any]) -> Table:
    return table(
        "Conversations (newest first)",
        ["name", "id", "agent", "state", "depth", "updated"],
        [
            (
                c.name if c.name != c.id else "",
                c.id,
                c.agent_id,
                conversation_state(c),
                str(c.depth),
                when(c.update_time) or when(c.create_time),
            )
            for c in conversations
        ],
    )


def branches_table(branches: Sequence[Any]) -> Table:
    return table(
        "Branches",
        ["", "name", "id", "forked from", "fork seq", "head seq", "created"],
        [
            (
                styled("*", "green") if b.active else "",
                b.name,
                b.id,
                b.parent_branch_id,
                str(b.fork_seq) if b.parent_branch_id else "",
                str(b.head_seq),
                when(b.create_time),
            )
            for b in branches
        ],
    )


def branch_line(branch: Any) -> str:
    active = " [green](active)[/green]" if branch.active else ""
    fork = f", forked at seq {branch.fork_seq}" if branch.parent_branch_id else ""
    return (
        f"Branch [bold]{escape(branch.name)}[/bold] ({escape(branch.id)}{fork}, "
        f"head seq {branch.head_seq}){active}"
    )


def state_kind(state: Any) -> str:
    from p2engine.orchestrator.v1 import orchestrator_pb2

    return enum_label(orchestrator_pb2.StateKind, state.kind, "STATE_KIND_").lower()


def stack_table(states: Sequence[Any]) -> Table:
    return table(
        None,
        ["seq", "kind", "target", "content"],
        [
            (
                str(s.seq),
                state_kind(s),
                s.target,
                shorten(state_content(s), 90),
            )
            for s in states
        ],
    )


def state_content(state: Any) -> str:
    """What a state says: its text, else the tools it calls, else its data."""
    if state.text:
        return str(state.text)
    calls = tool_call_names(state.data_json)
    if calls:
        return "calls " + ", ".join(calls)
    return _compact_json(state.data_json)


def tool_call_names(data_json: str) -> list[str]:
    """Names of the tool calls recorded in an assistant message's data, if any."""
    try:
        data = json.loads(data_json) if data_json else {}
    except ValueError:
        return []
    calls = data.get("tool_calls") if isinstance(data, dict) else None
    if not isinstance(calls, list):
        return []
    names = []
    for call in calls:
        if isinstance(call, dict):
            function = call.get("function")
            name = function.get("name") if isinstance(function, dict) else call.get("name")
            names.append(str(name or call.get("tool_name") or "?"))
    return names


def overrides_view(conversation: str, o: Any) -> RenderableType:
    temperature = str(o.temperature) if o.HasField("temperature") else ""
    return key_values(
        f"Overrides of {conversation}",
        [
            ("behavior", o.behavior_template or "(agent's)"),
            ("tools", ", ".join(o.tools) if o.tools else "(agent's)"),
            ("model", o.llm_model or "(agent's)"),
            ("temperature", temperature or "(model default)"),
        ],
    )


def _compact_json(text: str) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return text


def _call_args(text: str) -> str:
    """Call arguments as `to_agent=agent_beta, amount=25` (from their JSON object)."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return shorten(text, 80)
    if not isinstance(data, dict):
        return _compact_json(text)
    parts = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in data.items()]
    return shorten(", ".join(parts), 100)


def state_line(state: Any, *, echo_user: bool = True) -> str | None:
    """One chat line for an interaction state (Rich markup), None for bookkeeping states."""
    kind = state_kind(state)
    text = escape(" ".join(state.text.split()))
    target = escape(state.target)
    if kind in ("user_message", "user_input_response"):
        return f"[bold cyan]You>[/bold cyan] {text}" if echo_user else None
    if kind == "assistant_message":  # keep the model's line breaks (lists, tables)
        answer = escape(state.text.strip())
        return f"[bold green]{escape(state.agent_id)}>[/bold green] {answer}" if answer else None
    if kind == "tool_call":
        return f"[dim]  → {target}({escape(_call_args(state.data_json))})[/dim]"
    if kind == "tool_result":
        body = escape(shorten(_compact_json(state.data_json) or state.text, 110))
        if state.is_error:
            return f"[red]  ← {target} failed: {body}[/red]"
        return f"[dim]  ← {target}: {body}[/dim]"
    if kind == "agent_call":
        return f"[magenta]  ⇢ delegating to {target}: {text}[/magenta]"
    if kind == "agent_result":
        style = "red" if state.is_error else "magenta"
        return f"[{style}]  ⇠ {target}: {escape(shorten(state.text, 200))}[/{style}]"
    if kind == "user_input_request":
        return f"[bold yellow]{escape(state.agent_id)} asks:[/bold yellow] {text}"
    if kind == "waiting":
        return f"[dim]  … {text or 'waiting'}[/dim]"
    return None
