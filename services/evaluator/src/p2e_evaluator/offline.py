"""The deterministic judge: a score in [0, 1] from facts anyone can check in the transcript.

Facts: did the conversation end with an assistant answer; how many tool (and delegation)
results succeeded; does the final answer mention what the tools of its turn returned;
were there errors. Rules:

    helpfulness  = 0                                 without a final answer
                 = 0.5 + 0.5 * mentioned_fraction    with one (1.0 when no tool result to cite)
    tool_success = succeeded / results               (1.0 when no tool was used)
    score        = 0.5 * helpfulness + 0.3 * tool_success + 0.2 * (0 if errors else 1)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from p2e_evaluator.registry import OFFLINE_JUDGE_MODEL, Judgement
from p2e_evaluator.transcript import Transcript, Turn

RESULT_KINDS = ("tool_result", "agent_result")
TRAILING_KINDS = ("finished", "waiting")
WEIGHTS = {"helpfulness": 0.5, "tool_success": 0.3, "no_errors": 0.2}
_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]|[a-z0-9]")


@dataclass(frozen=True)
class Facts:
    ended_with_answer: bool
    results: int
    results_ok: int
    citable: int  # successful results of the last turn that have values to cite
    cited: int  # ... of which the final answer mentions at least one value
    errors: int


def _final_answer(turns: tuple[Turn, ...]) -> str | None:
    for turn in reversed(turns):
        if turn.kind in TRAILING_KINDS:
            continue
        if turn.kind == "assistant_message" and turn.text.strip():
            return turn.text
        return None
    return None


def _leaves(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def salient_values(data_json: str) -> set[str]:
    """Lower-case strings a faithful answer would repeat: numbers and short text values."""
    try:
        leaves = list(_leaves(json.loads(data_json)))
    except ValueError:
        leaves = [data_json]
    values: set[str] = set()
    for leaf in leaves:
        if isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, int | float):
            values.add(f"{leaf:g}")
            values.add(f"{leaf:.2f}")
        elif isinstance(leaf, str):
            text = leaf.strip().lower()
            values.update(w for w in _WORD.findall(text) if len(w) >= 4 or w.isdigit())
    return values


def _mentions(answer: str, values: set[str]) -> bool:
    words = set(_WORD.findall(answer.lower()))
    words |= {w.rstrip(".") for w in words}
    return any(v in words for v in values)


def observe(transcript: Transcript) -> Facts:
    turns = transcript.turns
    results = [t for t in turns if t.kind in RESULT_KINDS]
    answer = _final_answer(turns)
    last_user = max((i for i, t in enumerate(turns) if t.kind == "user_message"), default=-1)
    last_turn_ok = [t for t in turns[last_user + 1 :] if t.kind in RESULT_KINDS and not t.is_error]
    citable = [v for v in (salient_values(t.data_json or t.text) for t in last_turn_ok) if v]
    cited = sum(1 for v in citable if answer is not None and _mentions(answer, v))
    errors = sum(1 for t in results if t.is_error)
    return Facts(
        ended_with_answer=answer is not None,
        results=len(results),
        results_ok=len(results) - errors,
        citable=len(citable),
        cited=cited,
        errors=errors,
    )


def score(facts: Facts) -> dict[str, float]:
    mentioned = facts.cited / facts.citable if facts.citable else 1.0
    helpfulness = 0.5 + 0.5 * mentioned if facts.ended_with_answer else 0.0
    tool_success = facts.results_ok / facts.results if facts.results else 1.0
    no_errors = 0.0 if facts.errors else 1.0
    total = (
        WEIGHTS["helpfulness"] * helpfulness
        + WEIGHTS["tool_success"] * tool_success
        + WEIGHTS["no_errors"] * no_errors
    )
    return {
        "score": round(total, 4),
        "helpfulness": round(helpfulness, 4),
        "tool_success": round(tool_success, 4),
    }


def rationale(facts: Facts, metrics: dict[str, float]) -> str:
    answer = "yes" if facts.ended_with_answer else "no"
    tools = (
        f"{facts.results_ok} of {facts.results} tool results succeeded"
        if facts.results
        else "no tools were used"
    )
    cites = (
        f"the final answer mentions {facts.cited} of {facts.citable} tool results of its turn"
        if facts.citable
        else "no tool result to cite in the final turn"
    )
    errors = f"{facts.errors} error results" if facts.errors else "no errors"
    return (
        f"ended with an assistant answer: {answer}; {tools}; {cites}; {errors}. "
        f"score {metrics['score']:.2f} = 0.5 x helpfulness {metrics['helpfulness']:.2f}"
        f" + 0.3 x tool_success {metrics['tool_success']:.2f}"
        f" + 0.2 x no_errors {0 if facts.errors else 1}"
    )


def judge_offline(transcript: Transcript) -> Judgement:
    facts = observe(transcript)
    metrics = score(facts)
    return Judgement(metrics["score"], metrics, rationale(facts, metrics), OFFLINE_JUDGE_MODEL)
