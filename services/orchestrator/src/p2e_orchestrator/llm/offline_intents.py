"""What the offline model wants to do about one request (or one step of a numbered task list).

`INTENTS` is a table of (regex, handler), tried in order; the first handler that claims the
text decides. A handler returns `Calls` (tool calls for one reply), `Say` (text, e.g. a
question when an amount is missing), `None` (nothing to do for this step) or `NOT_MINE`
(let the next intent try).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from p2e_orchestrator.llm import offline_texts as texts
from p2e_orchestrator.llm.offline_answers import reply_text
from p2e_orchestrator.llm.offline_parse import (
    amount_problem,
    find_amount,
    find_cities,
    find_reason,
    find_recipient,
    is_agent_word,
    known_agents,
    list_after,
    mentioned_agents,
    money,
    name_list,
    split_shares,
)
from p2e_orchestrator.llm.offline_turn import Call, Turn, delegations, last_question


@dataclass(frozen=True)
class Calls:
    calls: tuple[Call, ...]
    note: str = ""


@dataclass(frozen=True)
class Say:
    text: str


class _NotMine:
    pass


NOT_MINE: Final = _NotMine()
Action = Calls | Say | None


@dataclass(frozen=True)
class Ctx:
    """One step to read: its text, the whole request, and what this turn did before it."""

    turn: Turn
    text: str
    whole: str
    in_list: bool = False
    transfers_before: bool = False


Handler = Callable[[Ctx, re.Match[str]], "Action | _NotMine"]
_CHOICE = re.compile(r"\b(?:you think|chosen|choose|pick|either|deserves?|better)\b", re.I)
_MERIT = re.compile(r"\b(?:merit|perform\w*|strong\w*|better|contribut\w*)\b", re.I)


def _delegate(ctx: Ctx, m: re.Match[str]) -> Action:
    message = m.group("message").strip().strip("\"'“”").strip()
    return Calls((Call("delegate", {"agent_id": m.group("agent"), "message": message}),))


def _solve(ctx: Ctx, m: re.Match[str]) -> Action:
    return Say(texts.solve(ctx.text))


def _creative(ctx: Ctx, m: re.Match[str]) -> Action:
    return Say(texts.creative(ctx.text))


def _greeting(ctx: Ctx, m: re.Match[str]) -> Action:
    return Say(texts.capabilities(ctx.turn))


def _nothing(ctx: Ctx, m: re.Match[str]) -> Action | _NotMine:
    return None if ctx.in_list else NOT_MINE


def _transfer(to: str, amount: str, reason: str | None) -> Call:
    args: dict[str, Any] = {"to_agent": to, "amount": amount}
    if reason:
        args["reason"] = reason
    return Call("transfer_funds", args)


def _step_reason(ctx: Ctx) -> str | None:
    """A `Reason: "..."` line of the whole task list applies to steps that give none."""
    return find_reason(ctx.whole) if ctx.in_list else None


def _resolve(ctx: Ctx, who: str) -> str | None:
    """Pronouns mean the last delegated agent, else the only agent the request names."""
    if who not in {"them", "him", "her", "it", "they"}:
        return who
    delegated = delegations(ctx.turn)
    if delegated:
        return delegated[-1][0]
    named = mentioned_agents(ctx.whole, ctx.turn)
    return named[0] if len(named) == 1 else None


def _choose(ctx: Ctx) -> tuple[str, str] | None:
    """When asked to pick a recipient, take the first agent named (deterministic), with a note."""
    named = mentioned_agents(ctx.whole, ctx.turn)
    if not named or not _CHOICE.search(ctx.text + ctx.whole):
        return None
    others = ", ".join(named[1:])
    why = f" over {others}" if others else ""
    note = (
        f"I chose {named[0]}{why}: nothing I could see set them apart, so I took the first named."
    )
    return named[0], note


def _transfer_intent(ctx: Ctx, m: re.Match[str]) -> Action | _NotMine:
    amount = find_amount(ctx.text)
    if not amount and ctx.in_list and ctx.transfers_before:
        return None  # "...give more to the stronger one": the transfers above already did it
    recipient = find_recipient(ctx.text, known_agents(ctx.turn))
    moneyish = re.search(r"\b(?:transfer|funds|units?|p2e|\$|compensate)", ctx.text, re.I)
    if not amount and not recipient and not moneyish:
        return NOT_MINE
    note, to = "", _resolve(ctx, recipient[0]) if recipient else None
    if to is None:
        chosen = _choose(ctx)
        if chosen is None:
            what = f"{money(amount[0])} P2E" if amount else "the funds"
            return Say(f"Who should I transfer {what} to?")
        to, note = chosen
    if not amount:
        return Say(f"How much should I transfer to {to}?")
    problem = amount_problem(amount[0])
    if problem:
        return Say(f"I can't transfer that: {problem}. How much should I transfer to {to}?")
    span = recipient[1] if recipient else (len(ctx.text), len(ctx.text))
    reason = find_reason(ctx.text, after=max(span[1], amount[1][1]), before=span[0])
    return Calls((_transfer(to, amount[0], reason or _step_reason(ctx)),), note)


def _reward(ctx: Ctx, m: re.Match[str]) -> Action:
    who = m.group("who") or "them"
    if who.lower() not in {"them", "him", "her", "it", "they"}:
        named = mentioned_agents(ctx.text, ctx.turn)
        who = who.lower() if who.lower() in named else (who if who in named else "them")
    delegated = delegations(ctx.turn)
    if who in {"them", "him", "her", "it", "they"}:
        if not delegated:
            return Say("Who should I reward? I haven't delegated any work in this conversation.")
        who, outcome = delegated[-1]
        if outcome is not None and not outcome.ok:
            return Say(f"The work delegated to {who} failed ({outcome.error or outcome.code}), "
                       "so I won't reward them.")  # fmt: skip
    amount = find_amount(ctx.text)
    if not amount:
        return Say(f"How much should I reward {who} with?")
    problem = amount_problem(amount[0])
    if problem:
        return Say(f"I can't send that reward: {problem}. How much should I give {who}?")
    reason = "reward for delegated work" if any(a == who for a, _ in delegated) else "reward"
    return Calls((_transfer(who, amount[0], find_reason(ctx.text) or reason),))


def _merit_weights(ctx: Ctx, agents: list[str]) -> list[int]:
    """Stronger contributors (longer successful delegated answers) get more; order is stable."""
    replies = {a: o for a, o in delegations(ctx.turn)}

    def score(agent: str) -> int:
        outcome = replies.get(agent)
        return len(reply_text(outcome)) if outcome is not None and outcome.ok else -1

    ranked = sorted(agents, key=lambda a: -score(a))
    weight = {agent: len(agents) + 1 - rank for rank, agent in enumerate(ranked)}
    return [weight[a] for a in agents]


def _distribute(ctx: Ctx, m: re.Match[str]) -> Action:
    amount = find_amount(ctx.text)
    agents = list_after(ctx.text[m.start() :], "among|between|to", known_agents(ctx.turn))
    from_delegation = not agents
    if from_delegation:
        agents = list(dict.fromkeys(a for a, _ in delegations(ctx.turn)))
    if not amount:
        return Say("How much should I distribute, and to whom?")
    if not agents:
        return Say(f"Who should receive the {money(amount[0])} P2E? Please name the agents.")
    problem = amount_problem(amount[0])
    if problem:
        return Say(f"I can't distribute that: {problem}.")
    merit = from_delegation and bool(_MERIT.search(ctx.text))
    weights = _merit_weights(ctx, agents) if merit else [1] * len(agents)
    default = "merit-based distribution" if merit else "equal distribution"
    reason = find_reason(ctx.text) if "reason" in ctx.text.lower() else None
    return _distribution(agents, amount[0], reason or _step_reason(ctx) or default, weights)


def _distribution(agents: list[str], total: str, reason: str, weights: list[int]) -> Calls:
    shares = split_shares(Decimal(total), weights)
    return Calls(tuple(_transfer(a, str(s), reason) for a, s in zip(agents, shares, strict=True)))


def _balance(ctx: Ctx, m: re.Match[str]) -> Action:
    named = list_after(ctx.text, "for|of|on", known_agents(ctx.turn))
    others = named or mentioned_agents(ctx.text, ctx.turn)
    others = [a for a in others if a.lower() not in {"me", "myself"} and a != ctx.turn.self_id]
    if not others:
        return Calls((Call("check_balance", {}),))
    params = ctx.turn.tools.get("check_balance", {}).get("parameters", {}).get("properties", {})
    key = next((k for k in ("agent_id", "agent", "wallet") if k in params), None)
    if key:
        return Calls(tuple(Call("check_balance", {key: a}) for a in others))
    names = " and ".join(others)
    return Say(f"I can only check my own balance, so I couldn't check the balance of {names}.")


def _history(ctx: Ctx, m: re.Match[str]) -> Action:
    found = re.search(
        r"\b(?:last|latest|recent|limit)\s+(\d+)|\b(\d+)\s+(?:\w+\s+)?transactions", ctx.text, re.I
    )
    limit = int(found.group(1) or found.group(2)) if found else 20
    return Calls((Call("transaction_history", {"limit": max(1, min(limit, 100))}),))


def _weather(ctx: Ctx, m: re.Match[str]) -> Action:
    cities = find_cities(ctx.text)
    if not cities:
        return Say("Which city should I check the weather for?")
    return Calls(tuple(Call("get_weather", {"city": city}) for city in cities))


# A creative noun asked for with a creative verb ("pay 5 for the joke" stays a payment).
_CREATIVE = (
    r"\b(?:tell|write|give me|produce|list|draft|share|make up|compose)\b.*"
    r"\b(?:jokes?|puns?|story|anecdote|memo|poem|limerick|facts?)\b"
)
_GREETING = r"^\s*(?:hello|hi|hey|greetings)\b|what can you do|\bskills\b|\bhelp\b|capabilit"
# Tried in order; e.g. money before weather, so "pay 5 for the weather report" is a payment.
_TABLE: list[tuple[str, Handler]] = [
    (r"^\s*(?:review|decide|consider|verify|confirm|wait|think)\b", _nothing),
    (r"^\s*delegate\s+to\s+(?P<agent>[\w-]+)\s*[:,-]\s*(?P<message>.+)$", _delegate),
    (r"\bsolve this\b|\boptimal way\b|\bbest way to (?:split|distribute)", _solve),
    (_CREATIVE, _creative),
    (r"\bdistribute\b", _distribute),
    (r"\b(?:transfer|send|pay|give|tip|compensate)\b", _transfer_intent),
    (r"\breward\s+(?:(?P<who>[A-Za-z][\w-]*)\b)?", _reward),
    (r"(?:\b|_)balances?\b|\bhow much (?:money|funds?|p2e)?\s*(?:do i have|have i got)", _balance),
    (r"\btransactions?\b|(?:\b|_)history\b|\bledger\b", _history),
    (r"(?:\b|_)(?:weather|forecast|temperature)\b|\b(?:raining|snowing|sunny) in\b", _weather),
    (_GREETING, _greeting),
]
INTENTS = [(re.compile(pattern, re.I | re.S), handler) for pattern, handler in _TABLE]


def read_step(ctx: Ctx) -> Action:
    """Run the intent table on one step; unknown requests get a short helpful answer."""
    for pattern, handler in INTENTS:
        match = pattern.search(ctx.text)
        if match:
            action = handler(ctx, match)
            if not isinstance(action, _NotMine):
                return action
    if ctx.in_list:
        return None
    return _answer_to_question(ctx) or Say(texts.unknown(ctx.text, ctx.turn))


_ASKED_AMOUNT = re.compile(r"How much should I (?:transfer to|reward) (?P<agent>[\w-]+)")
_ASKED_RECIPIENT = re.compile(r"Who should I transfer (?P<amount>[\d.]+) P2E to\?")
_ASKED_SHARES = re.compile(r"Who should receive the (?P<amount>[\d.]+) P2E\?")
_ASKED_CITY = re.compile(r"Which city should I check the weather for\?")
_SHORT_NAME = re.compile(r"^\s*(?:to\s+)?[`'\"]?(?P<agent>[A-Za-z][\w-]*)[`'\"]?\s*[.!]?\s*$", re.I)


def _answer_to_question(ctx: Ctx) -> Action:
    """A short reply to the model's own question ("How much...?" -> "25") completes the request."""
    asked = last_question(ctx.turn)
    if asked is None:
        return None
    earlier, question = asked
    amount, name = find_amount(ctx.text), _SHORT_NAME.match(ctx.text)
    action: Action = None
    if (m := _ASKED_AMOUNT.search(question)) and amount and len(ctx.text.split()) <= 4:
        agent = m.group("agent")
        reason = find_reason(earlier) or (
            "reward for delegated work" if "reward" in question else None
        )
        action = _checked(agent, amount[0], reason)
    elif (m := _ASKED_RECIPIENT.search(question)) and name and is_agent_word(name.group("agent")):
        typed = find_amount(earlier)  # the amount as the user wrote it ("25", not "25.00")
        total = typed[0] if typed else m.group("amount")
        action = _checked(name.group("agent"), total, find_reason(earlier))
    elif (m := _ASKED_SHARES.search(question)) and (names := name_list(ctx.text, bare=True)):
        action = _distribution(names, m.group("amount"), "equal distribution", [1] * len(names))
    elif _ASKED_CITY.search(question) and (cities := find_cities(f"in {ctx.text}")):
        action = Calls(tuple(Call("get_weather", {"city": city}) for city in cities))
    return action


def _checked(to: str, amount: str, reason: str | None) -> Action:
    problem = amount_problem(amount)
    if problem:
        return Say(f"I can't transfer that: {problem}. How much should I transfer to {to}?")
    return Calls((_transfer(to, amount, reason),))


_STEP = re.compile(r"^\s*\d+[.)]\s+(?P<step>.+?)\s*$", re.M)


def task_steps(request: str) -> list[str]:
    """The steps of a numbered task list ("1. ...", "2) ..."), or [] when it isn't one."""
    steps = [m.group("step") for m in _STEP.finditer(request)]
    return steps if len(steps) >= 2 else []
