"""The offline model's canned prose: capabilities, refusals, jokes, stories, facts, a maths answer.

Everything is chosen deterministically (a stable hash of the request, never `random`).
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

from p2e_orchestrator.llm.offline_parse import count_of, find_amount, split_shares
from p2e_orchestrator.llm.offline_turn import Turn

TOOL_PHRASES = {
    "get_weather": "look up the weather for a city",
    "check_balance": "check my wallet balance",
    "transfer_funds": "transfer P2E funds to another agent",
    "transaction_history": "show my recent transactions",
    "delegate": "delegate a task to another agent",
}
TOOL_ACTIONS = {
    "get_weather": "look up the weather",
    "check_balance": "check balances",
    "transfer_funds": "transfer funds",
    "transaction_history": "show the transaction history",
    "delegate": "delegate to another agent",
}

JOKES = (
    "Why did the astronaut break up with the ISS? It needed more space.",
    "How do you throw a party in space? You planet.",
    "Why don't wallets ever get lonely? They always have a balance to talk to.",
    "Why did the agent bring a ladder to the meeting? It heard the task would be escalated.",
)
PUNS = (
    "Astronauts never get cold on the ISS: it's all about layering in orbit.",
    "The Moon's restaurant had great food but no atmosphere.",
    "I tried to grab a space snack, but it was a bit of a launch-time commitment.",
    "Saturn is so stylish it wears its rings everywhere.",
    "The astronaut's favourite key on the keyboard? The space bar.",
    "Comets are just cosmic streakers with a tail to tell.",
    "The Sun skipped college because it already had a million degrees.",
    "Why did the star go to school? To get a little brighter.",
)
ISS_STORY = (
    "Morning on the ISS starts when the alarm floats over and politely taps you on the nose.",
    "Breakfast is a tortilla, because bread crumbs on a space station are tiny mutineers.",
    "Commander Reyes tried to pour coffee and instead created a small brown moon.",
    "The crew chased it down with straws, which counts as cardio up here.",
    "Every sock on board has a long-term plan to escape into the ventilation system.",
    "The treadmill requires bungee cords, so jogging feels like being hugged by a rubber band.",
    "Sleeping bags are strapped to the wall, so everyone technically sleeps standing up.",
    "Mission Control asked for a status report and got a video of a somersaulting sandwich.",
    "The toilet manual is longer than most novels and twice as suspenseful.",
    "At sunset, which happens sixteen times a day, someone always says 'again?'",
    "When the crew finally rested, the station kept spinning its story.",
)
ISS_PUN = "In the end, life on the ISS is simple: the days are long, but the orbit is well-rounded."
HICCUP_STORY = (
    "On day twelve in orbit, flight engineer Kim got the hiccups.",
    "In zero gravity, each hiccup launched her gently towards the ceiling.",
    "By the fifth hiccup she had drifted through two modules and greeted the airlock.",
    "The crew tried the classic cure of a sudden scare, but nothing surprises an astronaut.",
    "A glass of water was attempted, and the water attempted to leave the glass.",
    "Mission Control suggested holding her breath, which she did while orbiting the galley.",
    "Finally, the hiccups stopped just as she bumped softly into the commander.",
    "'Sorry,' she said, 'I was just trying to get a little space from my hiccups.'",
)
ISS_FACTS = (
    "The International Space Station orbits Earth about every 90 minutes.",
    "It travels at roughly 28,000 km/h at an altitude of about 400 km.",
    "It has been continuously crewed since November 2000.",
    "Its pressurised volume is comparable to a six-bedroom house.",
    "Its solar arrays span about 73 metres, wider than a Boeing 777's wingspan.",
    "It was assembled in orbit over more than 40 missions by five partner space agencies.",
    "The crew sees about 16 sunrises and 16 sunsets every day.",
    "Water on board is recycled, including moisture from the air and the crew's urine.",
)
MEMO = (
    "Subject: Waste-management procedures on the ISS.",
    "1. Solid waste is collected in sealed containers and stowed for disposal on departing "
    "cargo vehicles, which burn up on re-entry.",
    "2. Urine is processed by the Water Recovery System, which reclaims most of it as "
    "potable water.",
    "3. Condensate from cabin air is captured and routed to the same recovery loop.",
    "4. Hazardous materials are double-bagged, labelled and logged before stowage.",
    "5. Crews inspect the waste and hygiene compartment daily and report anomalies to "
    "ground control.",
    "Action: all crew members follow the procedures above and record deviations in the log.",
)


def pick(options: tuple[str, ...], seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def capabilities(turn: Turn) -> str:
    who = f"I'm {turn.self_id}. " if turn.self_id else ""
    phrases = [TOOL_PHRASES.get(name) or _describe_tool(name, turn) for name in turn.tools]
    if not phrases:
        return f"Hello! {who}I have no tools right now, but I can chat and answer questions."
    examples = [e for t, e in _EXAMPLES if t in turn.tools][:2]
    tail = f" Try: {' or '.join(examples)}." if examples else ""
    return f"Hello! {who}I can {_join(phrases)}.{tail}"


_EXAMPLES = (
    ("check_balance", '"Check my balance"'),
    ("transfer_funds", '"Transfer 25 to agent_beta for helping with analysis"'),
    ("get_weather", '"What\'s the weather in Paris?"'),
    ("delegate", '"Delegate to agent_helper: What\'s the weather in Tokyo?"'),
)


def _describe_tool(name: str, turn: Turn) -> str:
    description = str(turn.tools.get(name, {}).get("description") or "")
    first = re.split(r"(?<=[.!?])\s", description.strip())[0].rstrip(".")
    return f"use {name} ({first[:1].lower() + first[1:]})" if first else f"use {name}"


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def refusal(missing: list[str], turn: Turn) -> str:
    actions = _join([TOOL_ACTIONS.get(name, f"use {name}") for name in missing])
    tools = _join([f"the {name} tool" for name in missing])
    available = [TOOL_PHRASES.get(n) or f"use {n}" for n in turn.tools]
    offer = f" I can {_join(available)}." if available else ""
    verb = "isn't" if len(missing) == 1 else "aren't"
    return f"I can't {actions} here: {tools} {verb} available to me.{offer}"


def unknown(request: str, turn: Turn) -> str:
    topic = " ".join(request.split())
    topic = topic if len(topic) <= 60 else topic[:57].rstrip() + "..."
    available = [TOOL_PHRASES.get(n) or f"use {n}" for n in turn.tools]
    offer = f"I can {_join(available)}." if available else "I can only chat right now."
    return f'I don\'t have a way to help with "{topic}" directly. {offer}'


def creative(request: str) -> str:
    """Jokes, puns, stories, facts or a memo, sized to what the request asks for."""
    text = request.lower()
    serious = re.search(r"\b(?:no|not|without|don't|do not)\b[^.]*\b(?:humou?r|jokes?)", text)
    if "memo" in text or (serious and "technical" in text):
        return "\n".join(MEMO)
    if re.search(r"\bfacts?\b", text):
        count = count_of(request, "facts?", 5)
        return "\n".join(f"{i}. {fact}" for i, fact in enumerate(_cycle(ISS_FACTS, count), 1))
    if re.search(r"\b(?:story|anecdote|tale)\b", text):
        return _story(request, text)
    if re.search(r"\bpuns?\b", text):
        count = count_of(request, "puns?", 5)
        bullet = "- " if "bullet" in text else ""
        return "\n".join(bullet + pun for pun in _cycle(PUNS, count))
    return pick(JOKES, request)


def _story(request: str, text: str) -> str:
    bank, ending = (
        (HICCUP_STORY[:-1], HICCUP_STORY[-1]) if "hiccup" in text else (ISS_STORY, ISS_PUN)
    )
    count = count_of(request, "sentences?", 6)
    body = list(_cycle(bank, count - 1))
    return " ".join([*body, ending])


def _cycle(items: tuple[str, ...], count: int) -> list[str]:
    return [items[i % len(items)] for i in range(count)]


def solve(request: str) -> str:
    """A worked answer to 'distribute N units among K agents' style questions."""
    total_found = find_amount(request)
    agents = re.search(r"\bamong\s+(\d+)\s+agents?", request, re.I)
    if not total_found or not agents:
        return (
            "Here is how I'd approach it: state the objective, list the constraints, "
            "and compare the options on the same measure before choosing."
        )
    total, k = Decimal(total_found[0]), int(agents.group(1)) or 1
    equal = split_shares(total, [1] * k)[0]
    return (
        f"Baseline: with no information about the agents, split equally — {total} / {k} = "
        f"{equal} units each; by symmetry this is optimal when efficiencies are equal.\n"
        f"With different efficiencies e_i and diminishing returns (output_i = e_i * sqrt(x_i)), "
        f"maximise sum(e_i * sqrt(x_i)) subject to sum(x_i) = {total}. The Lagrange condition "
        f"e_i / (2 * sqrt(x_i)) = lambda gives x_i = {total} * e_i^2 / sum(e_j^2).\n"
        f"So: measure each agent's efficiency, give shares proportional to its square, and "
        f"fall back to {equal} each when the measurements are equal. With linear returns "
        f"instead, everything should go to the most efficient agent, which is fragile, so "
        f"the concave model is the practical choice."
    )
