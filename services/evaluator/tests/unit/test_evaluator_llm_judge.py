"""Parsing the LLM judge's JSON verdict (no model is called in tests)."""

from __future__ import annotations

import pytest

from p2e_evaluator.llm_judge import parse_verdict
from p2e_kit.errors import DependencyUnavailable


def test_plain_and_fenced_json_verdicts() -> None:
    judged = parse_verdict('{"score": 0.8, "helpfulness": 0.9, "rationale": "fine"}', "m")
    assert judged.score == 0.8
    assert judged.metrics == {"score": 0.8, "helpfulness": 0.9}
    assert judged.rationale == "fine"
    assert judged.model == "m"
    fenced = parse_verdict('Here:\n```json\n{"score": "0.25", "tool_success": 1}\n```', "m")
    assert fenced.metrics == {"score": 0.25, "tool_success": 1.0}


@pytest.mark.parametrize(
    "text",
    ["", "no json here", '{"score": 1.5}', '{"score": true}', '{"rationale": "x"}', "[1, 2]", "{"],
)
def test_unusable_verdicts_are_unavailable(text: str) -> None:
    with pytest.raises(DependencyUnavailable) as caught:
        parse_verdict(text, "m")
    assert caught.value.reason == "JUDGE_BAD_ANSWER"
