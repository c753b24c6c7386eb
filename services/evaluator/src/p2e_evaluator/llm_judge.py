"""The provider-backed judge: a rubric prompt through litellm, a JSON verdict back.

litellm is imported inside `ask_model` only (importing it takes seconds).
"""

from __future__ import annotations

import json
import logging
import re

from p2e_evaluator.registry import JudgeContext, Judgement
from p2e_evaluator.transcript import Transcript, render
from p2e_kit.errors import DependencyUnavailable

log = logging.getLogger(__name__)

SYSTEM_PROMPT = """You are an impartial judge of an AI agent's conversation.
Rubric:
{rubric}

Answer with one JSON object and nothing else:
{{"score": <0..1>, "helpfulness": <0..1>, "tool_success": <0..1>, "rationale": "<two sentences>"}}"""

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _unit(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} is not a number")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} {number} is outside [0, 1]")
    return number


def parse_verdict(text: str, model: str) -> Judgement:
    """The judgement in a model's answer; DependencyUnavailable when there is none."""
    found = _JSON_OBJECT.search(text or "")
    try:
        if found is None:
            raise ValueError("no JSON object")
        body = json.loads(found.group(0))
        if not isinstance(body, dict):
            raise ValueError("not an object")
        metrics = {"score": _unit(body.get("score"), "score")}
        for name in ("helpfulness", "tool_success"):
            if name in body:
                metrics[name] = _unit(body[name], name)
    except ValueError as exc:
        raise DependencyUnavailable(
            f"judge model {model} answered without a usable JSON score ({exc})",
            reason="JUDGE_BAD_ANSWER",
        ) from exc
    return Judgement(metrics["score"], metrics, str(body.get("rationale", "")), model)


async def ask_model(transcript: Transcript, context: JudgeContext) -> Judgement:
    import litellm  # lazily: seconds to import

    messages = [
        {"role": "system", "content": SYSTEM_PROMPT.format(rubric=context.rubric)},
        {"role": "user", "content": render(transcript)},
    ]
    try:
        response = await litellm.acompletion(
            model=context.model, messages=messages, temperature=0, api_base=context.api_base
        )
    except Exception as exc:  # litellm raises provider-specific errors
        raise DependencyUnavailable(
            f"judge model {context.model} is unavailable: {exc}", reason="JUDGE_UNAVAILABLE"
        ) from exc
    content = response.choices[0].message.content  # type: ignore[union-attr]
    return parse_verdict(content or "", context.model)
