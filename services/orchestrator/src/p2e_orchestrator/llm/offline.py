"""The embedded offline model: deterministic, no network, pure Python.

It reads an OpenAI-format conversation the way a chat model would. The turn's request (the
latest user message) is read by the intent table in `offline_intents`; a numbered task list
is read step by step. Each step that needs tools becomes one reply with tool calls (several
calls in one reply when they are independent, e.g. weather for four cities); once every
step's calls have results, the model answers from those results (`offline_answers`).
Nothing depends on temperature, time or randomness: the same conversation always gets the
same reply, including the tool-call ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from p2e_orchestrator.llm import offline_texts as texts
from p2e_orchestrator.llm.offline_answers import compose
from p2e_orchestrator.llm.offline_intents import Calls, Ctx, Say, read_step, task_steps
from p2e_orchestrator.llm.offline_turn import Turn, parse_turn
from p2e_orchestrator.llm.port import ModelReply, ToolCallRequest

MAX_ROUNDS = 8  # tool-call replies per turn; after that the model answers with what it has


def _offered(action: Calls | Say | None, turn: Turn) -> Calls | Say | None:
    """A step that needs a tool the agent wasn't given becomes a plain refusal."""
    if not isinstance(action, Calls):
        return action
    missing = list(dict.fromkeys(c.name for c in action.calls if not turn.offers(c.name)))
    return Say(texts.refusal(missing, turn)) if missing else action


def next_action(turn: Turn) -> Calls | Say:
    """The next reply for this turn: the next step's tool calls, or the final text."""
    steps = task_steps(turn.request)
    in_list = bool(steps)
    notes: list[str] = []
    rounds = 0
    transfers = False
    for step in steps or [turn.request]:
        view = replace(turn, rounds=turn.rounds[:rounds])
        action = _offered(read_step(Ctx(view, step, turn.request, in_list, transfers)), turn)
        if isinstance(action, Say):
            if not in_list and not turn.rounds:
                return action
            notes.append(action.text)
        elif isinstance(action, Calls):
            if action.note:
                notes.append(action.note)
            if rounds == len(turn.rounds) and rounds < MAX_ROUNDS:
                return action
            transfers = transfers or any(c.name == "transfer_funds" for c in action.calls)
            rounds += 1
    return Say(compose(turn, notes))


def call_id(model: str, messages: list[Any], tools: list[str], index: int) -> str:
    """A stable id for the index-th call of the reply to this exact conversation."""
    payload = json.dumps([model, messages, tools, index], sort_keys=True, default=str)
    return "call_" + hashlib.sha256(payload.encode()).hexdigest()[:24]


class OfflineModel:
    """ModelPort implementation that needs no key, no network and no litellm."""

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        temperature: float | None = None,
    ) -> ModelReply:
        return self.reply(model=model, messages=messages, tools=tools)

    def reply(
        self, *, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> ModelReply:
        """The synchronous core (also used by the litellm custom provider)."""
        turn = parse_turn(messages, tools)
        action = next_action(turn)
        if isinstance(action, Say):
            return ModelReply(content=action.text, model=model)
        names = sorted(turn.tools)
        calls = [
            ToolCallRequest(
                id=call_id(model, messages, names, index),
                name=call.name,
                arguments=json.dumps(call.args, ensure_ascii=False),
            )
            for index, call in enumerate(action.calls)
        ]
        return ModelReply(content=None, tool_calls=calls, model=model)
