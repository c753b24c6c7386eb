"""Small text readers the offline model's intents share: amounts, agents, reasons, cities."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from p2e_orchestrator.llm.offline_turn import Turn

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}  # fmt: skip
KNOWN_TOOLS = {"get_weather", "check_balance", "transfer_funds", "transaction_history", "delegate"}
PRONOUNS = {"them", "him", "her", "it", "they"}
# Words that can follow "to"/"pay" without naming an agent.
NOT_AGENTS = PRONOUNS | {
    "the", "a", "an", "your", "my", "me", "each", "every", "all", "either", "whoever",
    "whichever", "their", "his", "our", "us", "you", "someone", "somebody", "team", "more",
    "less", "some", "any", "money", "funds", "units", "unit", "tokens", "credits", "p2e",
    "send", "be", "do", "finish", "complete", "make", "give", "pay", "transfer", "use", "get",
    "agent", "agents", "back", "them", "whom", "who", "and", "or", "for", "with", "this",
    "that", "own", "its", "members", "everyone", "everybody",
}  # fmt: skip
DEFAULT_CITIES = ("Paris", "London", "New York", "Tokyo")
CENT = Decimal("0.01")

_UNIT = r"(?:units?|p2e|tokens?|credits?|coins?|dollars?|usd)\b"
_AMOUNT = re.compile(
    r"(?<![\w.-])(?P<cur>[$€£])?\s?(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    rf"(?![\d\w])(?:\s*(?P<unit>{_UNIT}))?",
    re.I,
)
_WORD_AMOUNT = re.compile(rf"\b(?P<word>{'|'.join(NUMBER_WORDS)})\s+(?P<unit>{_UNIT})", re.I)
_IDENT = re.compile(r"^[A-Za-z][\w-]*$")
_AGENT_ID = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")
_TO_AGENT = re.compile(r"\bto\s+(?:agent\s+)?[`'\"“]?(?P<agent>[A-Za-z][\w-]*)", re.I)
_VERB_AGENT = re.compile(
    r"\b(?:pay|give|send|tip|reward|compensate)\s+[`'\"“]?(?P<agent>[A-Za-z][\w-]*)", re.I
)
_REASON_QUOTED = re.compile(r"\breason\s*[:=]\s*[\"“'](?P<reason>[^\"”'\n]+)[\"”']", re.I)
_REASON_PLAIN = re.compile(r"\breason\s*[:=]\s*(?P<reason>[^\n)\"]+)", re.I)
_REASON_FOR = re.compile(r"\bfor\s+(?P<reason>.+)", re.I | re.S)
_LIST_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+|\s*&\s*", re.I)
_CITY_PLACE = re.compile(r"\b(?:in|for|at)\s+(?P<cities>[^.?!\n;:]+)", re.I)
_CITY = re.compile(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ .'-]{0,40}")
_NOT_CITIES = {"each city", "every city", "it", "me", "us", "the city", "my city"}
_CITY_TAIL = re.compile(
    r"\s+(?:right now|now|today|tonight|tomorrow|this week|currently|please|like)\b.*$", re.I
)


def find_amount(text: str) -> tuple[str, tuple[int, int]] | None:
    """The amount as typed ("25", "25.5", "1000"), preferring one with a unit or currency sign."""
    found = list(_AMOUNT.finditer(text))
    marked = [m for m in found if m.group("cur") or m.group("unit")]
    best = (marked or found or [None])[0]
    if best is not None:
        number = best.group("num").replace(",", "")
        if best.group("frac") is not None:
            number += "." + best.group("frac")
        return number, best.span()
    word = _WORD_AMOUNT.search(text)
    if word:
        return str(NUMBER_WORDS[word.group("word").lower()]), word.span()
    return None


def amount_problem(amount: str) -> str | None:
    """Why an amount cannot be sent as is (the ledger's scale is 2 decimals), else None."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        return f"I couldn't read {amount!r} as an amount"
    if value <= 0:
        return "the amount must be more than zero"
    if value != value.quantize(CENT):
        return f"{amount} has more than 2 decimal places"
    return None


def money(value: object) -> str:
    """Format an amount with 2 decimals ("25" -> "25.00"); non-numbers pass through."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return str(number.quantize(CENT)) if number == number.quantize(CENT) else str(number)


def split_shares(total: Decimal, weights: list[int]) -> list[Decimal]:
    """Shares at 2 decimals, rounded down, the remainder on the last: they sum to `total`."""
    whole = sum(weights)
    shares = [(total * w / whole).quantize(CENT, rounding=ROUND_DOWN) for w in weights[:-1]]
    return [*shares, total - sum(shares, Decimal(0))]


def is_agent_word(word: str) -> bool:
    return bool(_IDENT.match(word)) and word.lower() not in NOT_AGENTS


def known_agents(turn: Turn) -> set[str]:
    """Agent ids the `delegate` tool's schema enumerates, if it does."""
    spec = turn.tools.get("delegate", {})
    prop = spec.get("parameters", {}).get("properties", {}).get("agent_id", {})
    return {str(a) for a in prop.get("enum", []) if isinstance(a, str)}


def mentioned_agents(text: str, turn: Turn) -> list[str]:
    """Agent ids named in `text` (ids with '_' or known ones), minus tools and the agent itself."""
    known = known_agents(turn)
    found: list[str] = []
    for token in re.findall(r"[A-Za-z][\w-]*", text):
        word = token.lower() if _AGENT_ID.fullmatch(token) else token
        if (_AGENT_ID.fullmatch(token) or token in known) and word not in found:
            found.append(word)
    skip = KNOWN_TOOLS | set(turn.tools) | {turn.self_id or ""}
    return [agent for agent in found if agent not in skip]


def find_recipient(text: str, known: set[str] | None = None) -> tuple[str, tuple[int, int]] | None:
    """The agent after "to" (or after "pay"/"give"...); pronouns come back as themselves.

    A plain word ("treasurer") counts only where a name can end ("to treasurer for fees"),
    so "to compensate them" is not read as paying an agent called "compensate".
    """
    for pattern in (_TO_AGENT, _VERB_AGENT):
        for match in pattern.finditer(text):
            word = match.group("agent")
            if word.lower() in PRONOUNS:
                return word.lower(), match.span()
            if is_agent_word(word) and (
                _AGENT_ID.fullmatch(word)
                or word in (known or set())
                or _ends_name(text, match.end())
            ):
                return word, match.span()
    return None


def _ends_name(text: str, end: int) -> bool:
    return bool(
        re.match(
            r"[`'\"”]?\s*(?:$|[^\w\s]|(?:for|as|with|because|and|now|please)\b|\d)",
            text[end:],
            re.I,
        )
    )


def find_reason(text: str, *, after: int = 0, before: int | None = None) -> str | None:
    """An explicit `reason: "..."`, else "for <reason>" after the recipient (or before it)."""
    for pattern in (_REASON_QUOTED, _REASON_PLAIN):
        found = pattern.search(text)
        if found:
            return _clean(found.group("reason"))
    for segment in (text[after:], text[:before] if before is not None else ""):
        found = _REASON_FOR.search(segment)
        if found:
            reason = _clean(re.split(r"\s*\(|\n", found.group("reason"))[0])
            if reason:
                return reason
    return None


def _clean(text: str) -> str:
    return text.strip().strip("\"'“”").rstrip(".!?, ").strip()[:200]


def name_list(text: str, known: set[str] | None = None, *, bare: bool = False) -> list[str] | None:
    """Split "a, b, and c" into agent names; None unless it clearly is such a list.

    Every item must be an identifier, and a single plain word must be a known agent unless
    the text is nothing but names (`bare`), so "to distribute" is not an agent "distribute".
    """
    text = text.strip().rstrip(".!")
    items = [item.strip().strip("\"'`“”") for item in _LIST_SPLIT.split(text) if item]
    items = [re.sub(r"^(?:the|agents?)\s+", "", item, flags=re.I) for item in items if item]
    if not items or not all(is_agent_word(item) for item in items):
        return None
    single_ok = bare or _AGENT_ID.fullmatch(items[0]) or items[0] in (known or set())
    if len(items) == 1 and not single_ok:
        return None
    return items


def list_after(text: str, words: str, known: set[str] | None = None) -> list[str] | None:
    """The first name list after one of `words` (e.g. "among|between"), up to the sentence end."""
    for found in re.finditer(rf"\b(?:{words})\s+(?P<list>[^.?!\n;:(]+)", text, re.I):
        names = name_list(found.group("list"), known)
        if names:
            return names
    return None


def find_cities(text: str) -> list[str]:
    """Cities after "in"/"for"/"at"; "major cities" means a default set; [] when none."""
    if re.search(
        r"\b(?:major|big|biggest|largest|world|several|some)\b[\w\s]*\bcities\b", text, re.I
    ):
        return list(DEFAULT_CITIES)
    for place in _CITY_PLACE.finditer(text):
        chunk = _CITY_TAIL.sub("", place.group("cities")).strip()
        cities = [c.strip().strip("\"'") for c in _LIST_SPLIT.split(chunk) if c.strip()]
        cities = [c.title() if c.islower() else c for c in cities]
        if cities and all(_CITY.fullmatch(c) and c.lower() not in _NOT_CITIES for c in cities):
            return cities[:10]
    return []


def count_of(text: str, nouns: str, default: int) -> int:
    """A count written before a noun: "10-sentence", "exactly eight sentences", "six puns"."""
    words = "|".join(NUMBER_WORDS)
    found = re.search(rf"\b(\d+|{words})(?:[\s-]+[\w-]+){{0,3}}?[\s-]+(?:{nouns})", text, re.I)
    if not found:
        return default
    token = found.group(1).lower()
    value = int(token) if token.isdigit() else NUMBER_WORDS[token]
    return max(1, min(value, 20))
