"""The offline model's final answer: what the tool results of this turn say, in plain words.

Result shapes read (keys tried in order, so small differences between tools don't matter):
balance `{"balance": "100.00", "asset": "P2E"}`; transfer `{"amount", "to_agent",
"new_balance" | "balance_after" | "balance", "status"}`; weather `{"city", "condition",
"temperature_c", "humidity", "wind_kph"}`; history `{"transactions": [...]}` or a list;
delegate `{"reply" | "response" | "content" ...}` or text; errors `{"status": "error",
"error_code", "error_message"}` or `{"error": ...}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from p2e_orchestrator.llm.offline_parse import money
from p2e_orchestrator.llm.offline_turn import Call, Done, Outcome, Turn

ERROR_LABELS = {
    "INSUFFICIENT_FUNDS": "insufficient funds",
    "INVALID_ARGUMENT": "the request was invalid",
    "NOT_FOUND": "not found",
    "PERMISSION_DENIED": "that is not permitted",
    "RESOURCE_EXHAUSTED": "a spending limit was reached",
    "QUOTA_EXCEEDED": "a spending limit was reached",
    "FAILED_PRECONDITION": "a precondition was not met",
    "UNAVAILABLE": "the service is unavailable right now, please try again",
    "DEADLINE_EXCEEDED": "it took too long, please try again",
    "NO_RESULT": "",
}
_BALANCE_AFTER = ("new_balance", "balance_after", "from_balance", "payer_balance", "balance")
_REPLY_KEYS = ("reply", "response", "answer", "content", "final_answer", "message", "text")


def first(data: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(data, dict):
        for key in keys:
            if data.get(key) not in (None, ""):
                return data[key]
    return None


def asset(data: Any) -> str:
    return str(first(data, ("asset", "currency")) or "P2E")


def phrase(call: Call) -> str:
    """What a call does, as the object of "I couldn't ..."."""
    args = call.args
    if call.name == "transfer_funds":
        return f"transfer {money(args.get('amount', '?'))} P2E to {args.get('to_agent', '?')}"
    if call.name == "get_weather":
        return f"get the weather for {args.get('city', '?')}"
    if call.name == "delegate":
        return f"delegate to {args.get('agent_id', '?')}"
    if call.name == "check_balance":
        return "check the balance"
    if call.name == "transaction_history":
        return "fetch the transaction history"
    return f"run {call.name}"


def _error(done: Done, outcome: Outcome) -> str:
    code = outcome.code.upper()
    label = ERROR_LABELS[code] if code in ERROR_LABELS else code.replace("_", " ").lower()
    detail = outcome.error.strip().rstrip(".")
    if label and detail and label.lower() not in detail.lower():
        why = f"{label} ({detail})"
    else:
        why = detail or label or "the tool reported an error"
    return f"I couldn't {phrase(done.call)}: {why}."


def _balance(done: Done, turn: Turn) -> str:
    data = done.outcome.data if done.outcome else None
    value = first(data, ("balance", "available", "amount", "value"))
    if value is None and isinstance(data, str | int | float):
        value = data
    owner = first(data, ("agent_id", "wallet", "owner"))
    whose = "Your" if not owner or owner == turn.self_id or not turn.self_id else f"{owner}'s"
    if value is None:
        return f"I could not read {whose.lower()} balance from the ledger's answer."
    return f"{whose} balance is {money(value)} {asset(data)}."


def _transfer(done: Done, turn: Turn) -> str:
    data = done.outcome.data if done.outcome else None
    amount = money(first(data, ("amount",)) or done.call.args.get("amount", "?"))
    to = first(data, ("to_agent", "to", "recipient")) or done.call.args.get("to_agent", "?")
    reason = done.call.args.get("reason")
    tail = f" ({reason})" if reason else ""
    status = str(first(data, ("status",)) or "").lower()
    if "pending" in status or "approval" in status:
        return f"The transfer of {amount} {asset(data)} to {to}{tail} is waiting for approval."
    return f"Transferred {amount} {asset(data)} to {to}{tail}."


def _weather(done: Done, turn: Turn) -> str:
    data = done.outcome.data if done.outcome else None
    city = first(data, ("city", "location")) or done.call.args.get("city", "?")
    if not isinstance(data, dict):
        return f"{city}: {data}"
    parts = [str(first(data, ("condition", "conditions", "summary", "description", "forecast")))]
    temp = first(data, ("temperature_c", "temp_c", "temperature", "temp"))
    if temp is not None:
        parts.append(f"{temp}°C")
    humidity = first(data, ("humidity", "humidity_pct"))
    if humidity is not None:
        parts.append(f"humidity {humidity}%")
    wind = first(data, ("wind_kph", "wind_kmh", "wind_speed_kph", "wind"))
    if wind is not None:
        parts.append(f"wind {wind} km/h")
    return f"{city}: " + ", ".join(p for p in parts if p and p != "None") + "."


def _history(done: Done, turn: Turn) -> str:
    data = done.outcome.data if done.outcome else None
    rows = data if isinstance(data, list) else first(data, ("transactions", "entries", "items"))
    if not rows:
        return "There are no transactions yet."
    lines = [f"Recent transactions ({len(rows)}):"]
    for row in rows[:20]:
        if not isinstance(row, dict):
            lines.append(f"- {row}")
            continue
        payer = first(row, ("from_agent", "from", "payer", "sender", "from_wallet")) or "?"
        payee = first(row, ("to_agent", "to", "payee", "recipient", "to_wallet")) or "?"
        reason = first(row, ("reason", "memo", "description"))
        amount = money(first(row, ("amount",)) or "?")
        lines.append(
            f"- {payer} -> {payee}: {amount} {asset(row)}" + (f" ({reason})" if reason else "")
        )
    return "\n".join(lines)


def reply_text(outcome: Outcome | None) -> str:
    data = outcome.data if outcome else None
    text = first(data, _REPLY_KEYS) if isinstance(data, dict) else data
    return str(text if text is not None else json.dumps(data, sort_keys=True)).strip()


def _delegate(done: Done, turn: Turn) -> str:
    return f"{done.call.args.get('agent_id', '?')} replied: {reply_text(done.outcome)}"


def _other(done: Done, turn: Turn) -> str:
    data = done.outcome.data if done.outcome else None
    shown = data if isinstance(data, str) else json.dumps(data, sort_keys=True)
    return f"{done.call.name}: {shown}"


DESCRIBE: dict[str, Callable[[Done, Turn], str]] = {
    "check_balance": _balance,
    "transfer_funds": _transfer,
    "get_weather": _weather,
    "transaction_history": _history,
    "delegate": _delegate,
}


def _balance_after(done: Done) -> str | None:
    outcome = done.outcome
    if done.call.name != "transfer_funds" or not outcome or not outcome.ok:
        return None
    value = first(outcome.data, _BALANCE_AFTER)
    return f"Your balance is now {money(value)} {asset(outcome.data)}." if value else None


def compose(turn: Turn, notes: list[str]) -> str:
    """The final answer for this turn: one line per result, then the notes."""
    lines: list[str] = []
    balance_line: str | None = None
    for done in [d for batch in turn.rounds for d in batch]:
        if done.outcome is None:
            lines.append(f"I'm still waiting for the result to {phrase(done.call)}.")
        elif not done.outcome.ok:
            lines.append(_error(done, done.outcome))
        else:
            lines.append(DESCRIBE.get(done.call.name, _other)(done, turn))
            balance_line = _balance_after(done) or balance_line
    if balance_line and lines and lines[-1].startswith("Transferred"):
        lines[-1] = f"{lines[-1]} {balance_line}"
    elif balance_line:
        lines.append(balance_line)
    return "\n".join([*lines, *notes]) or "Done."
