"""The offline judge's rules, its determinism, and gpt4_judge's offline fallback."""

from __future__ import annotations

import json

import pytest

from p2e_evaluator.judges import JudgePolicy, builtin_registry, gpt4_judge, offline_judge
from p2e_evaluator.offline import judge_offline, observe, salient_values
from p2e_evaluator.registry import OFFLINE_JUDGE_MODEL, JudgeContext
from p2e_evaluator.transcript import Transcript, Turn

OFFLINE = JudgeContext(rubric="", model=OFFLINE_JUDGE_MODEL, offline=True)
WEATHER = {"city": "Paris", "temperature_c": 18, "conditions": "partly cloudy"}


def transcript(*turns: Turn) -> Transcript:
    return Transcript("c1", "b1", turns, head_artifact_id="last")


def user(text: str) -> Turn:
    return Turn("user_message", text=text)


def assistant(text: str) -> Turn:
    return Turn("assistant_message", text=text)


def call(tool: str, args: dict[str, object]) -> Turn:
    return Turn("tool_call", target=tool, data_json=json.dumps(args), call_id="k")


def result(tool: str, data: dict[str, object], *, error: bool = False) -> Turn:
    return Turn("tool_result", target=tool, data_json=json.dumps(data), is_error=error)


GOOD = transcript(
    user("What's the weather in Paris?"),
    call("get_weather", {"city": "Paris"}),
    result("get_weather", WEATHER),
    assistant("It is 18°C and partly cloudy in Paris."),
    Turn("finished"),
)


def test_a_good_tool_answer_scores_one() -> None:
    judged = judge_offline(GOOD)
    assert judged.score == 1.0
    assert judged.metrics == {"score": 1.0, "helpfulness": 1.0, "tool_success": 1.0}
    assert judged.model == OFFLINE_JUDGE_MODEL
    assert "ended with an assistant answer: yes" in judged.rationale
    assert "1 of 1 tool results succeeded" in judged.rationale
    assert "mentions 1 of 1" in judged.rationale


def test_judgement_is_deterministic() -> None:
    assert judge_offline(GOOD) == judge_offline(GOOD)


def test_no_final_answer_scores_zero_helpfulness() -> None:
    judged = judge_offline(
        transcript(user("weather?"), call("get_weather", {}), result("get_weather", WEATHER))
    )
    assert judged.metrics["helpfulness"] == 0.0
    assert judged.score == 0.5  # 0.3 tool success + 0.2 no errors


def test_answer_ignoring_the_tool_result_halves_helpfulness() -> None:
    judged = judge_offline(
        transcript(
            user("weather?"),
            call("get_weather", {"city": "Paris"}),
            result("get_weather", WEATHER),
            assistant("I looked it up for you."),
        )
    )
    assert judged.metrics["helpfulness"] == 0.5
    assert judged.score == 0.75
    assert "mentions 0 of 1" in judged.rationale


def test_failed_tool_costs_tool_success_and_the_error_share() -> None:
    judged = judge_offline(
        transcript(
            user("Transfer 25 to agent_beta"),
            call("transfer_funds", {"to_agent": "agent_beta", "amount": "25"}),
            result("transfer_funds", {"error_code": "PERMISSION_DENIED"}, error=True),
            call("transfer_funds", {"to_agent": "agent_beta", "amount": "25"}),
            result("transfer_funds", {"status": "settled", "amount": "25.00"}),
            assistant("Done: 25.00 sent to agent_beta."),
        )
    )
    assert judged.metrics == {"score": 0.65, "helpfulness": 1.0, "tool_success": 0.5}
    assert "1 error results" in judged.rationale


def test_only_the_last_turn_needs_citing() -> None:
    judged = judge_offline(
        transcript(
            user("weather?"),
            call("get_weather", {"city": "Paris"}),
            result("get_weather", WEATHER),
            assistant("Paris: 18°C."),
            user("thanks!"),
            assistant("You're welcome."),
        )
    )
    assert judged.score == 1.0
    assert "no tool result to cite" in judged.rationale


def test_waiting_for_the_user_is_not_an_answer() -> None:
    facts = observe(transcript(user("pay"), Turn("user_input_request", text="How much?")))
    assert not facts.ended_with_answer


def test_salient_values_are_numbers_and_words() -> None:
    values = salient_values(json.dumps({"balance": "125.50", "n": 3, "ok": True, "who": "Bob"}))
    assert {"125.50", "3", "3.00"} <= values
    assert "true" not in values
    assert "bob" not in values  # too short to be evidence
    assert salient_values("not json at all") == {"json"}


async def test_offline_judge_is_registered_and_gpt4_falls_back_offline() -> None:
    registry = builtin_registry()
    assert [s.id for s in registry.specs()] == ["gpt4_judge", "offline_judge"]
    plain = await offline_judge(GOOD, OFFLINE)
    fallback = await gpt4_judge(GOOD, OFFLINE)
    assert fallback.score == plain.score
    assert fallback.model == OFFLINE_JUDGE_MODEL
    assert fallback.rationale.startswith("offline judge")


@pytest.mark.parametrize(
    ("environ", "mode", "offline"),
    [
        ({}, "auto", True),
        ({"OPENAI_API_KEY": "sk-x"}, "auto", False),
        ({"OPENAI_API_KEY": "sk-x", "P2E_LLM_OFFLINE_ONLY": "1"}, "auto", True),
        ({"OPENAI_API_KEY": "sk-x"}, "offline", True),
        ({}, "provider", False),
        ({"ANTHROPIC_API_KEY": "k"}, "auto", True),  # the judge's provider is openai
    ],
)
def test_policy_follows_the_orchestrator_rule(
    environ: dict[str, str], mode: str, offline: bool
) -> None:
    from p2e_kit.appconfig import LLMConfig

    policy = JudgePolicy(llm=LLMConfig(mode=mode), environ=environ)  # type: ignore[arg-type]
    spec = builtin_registry().get("gpt4_judge")
    assert policy.is_offline(spec) is offline
    assert policy.effective_model(spec) == (OFFLINE_JUDGE_MODEL if offline else "openai/gpt-4o")
    assert policy.is_offline(builtin_registry().get("offline_judge"))


def test_policy_judge_model_override_picks_its_provider_key() -> None:
    policy = JudgePolicy(judge_model="anthropic/claude-x", environ={"ANTHROPIC_API_KEY": "k"})
    spec = builtin_registry().get("gpt4_judge")
    assert policy.effective_model(spec) == "anthropic/claude-x"
    context = policy.context(spec, rubric="")
    assert context.rubric == spec.rubric
    assert not context.offline
