"""The built-in evaluators and the rule that decides whether an LLM judge runs offline."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from p2e_evaluator.llm_judge import ask_model
from p2e_evaluator.offline import judge_offline
from p2e_evaluator.registry import (
    OFFLINE_JUDGE_MODEL,
    EvaluatorSpec,
    JudgeContext,
    Judgement,
    Registry,
    evaluator,
)
from p2e_evaluator.transcript import Transcript
from p2e_kit.appconfig import LLMConfig

METRICS = ("score", "helpfulness", "tool_success")
DEFAULT_RUBRIC = (
    "Score how well the agent served the user: a correct, complete final answer that uses "
    "what its tools returned scores high; failed tools, errors, unanswered requests and "
    "invented facts score low."
)
OFFLINE_RUBRIC = (
    "Deterministic: 0.5 x helpfulness (final answer, citing the turn's tool results) "
    "+ 0.3 x tool success rate + 0.2 x no errors."
)


@evaluator(
    id="offline_judge",
    version="1",
    description="Deterministic judge: answered? tools succeeded? answer cites tool results?",
    model=OFFLINE_JUDGE_MODEL,
    metrics=METRICS,
    rubric=OFFLINE_RUBRIC,
)
async def offline_judge(transcript: Transcript, context: JudgeContext) -> Judgement:
    return judge_offline(transcript)


@evaluator(
    id="gpt4_judge",
    version="1",
    description="LLM judge with a rubric; the offline judge answers when no provider key is set",
    model="openai/gpt-4o",
    metrics=METRICS,
    rubric=DEFAULT_RUBRIC,
)
async def gpt4_judge(transcript: Transcript, context: JudgeContext) -> Judgement:
    if context.offline:
        judged = judge_offline(transcript)
        note = "offline judge (no provider key configured or offline mode): "
        return replace(judged, rationale=note + judged.rationale)
    return await ask_model(transcript, context)


def builtin_registry() -> Registry:
    return Registry([offline_judge, gpt4_judge])


def provider_key_name(model: str) -> str:
    """The environment variable holding the key of a litellm model's provider."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return f"{provider.upper()}_API_KEY"


@dataclass(frozen=True)
class JudgePolicy:
    """Which model answers: the orchestrator's rule. Offline when P2E_LLM_OFFLINE_ONLY=1, when
    the config's llm.mode is "offline", or in "auto" mode when the provider's key is unset."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    judge_model: str = ""
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def configured_model(self, spec: EvaluatorSpec) -> str:
        if not spec.needs_provider:
            return spec.model
        return self.judge_model or spec.model

    def is_offline(self, spec: EvaluatorSpec) -> bool:
        if not spec.needs_provider or self.environ.get("P2E_LLM_OFFLINE_ONLY") == "1":
            return True
        if self.llm.mode == "offline":
            return True
        if self.llm.mode == "provider":
            return False
        return not self.environ.get(provider_key_name(self.configured_model(spec)))

    def effective_model(self, spec: EvaluatorSpec) -> str:
        return OFFLINE_JUDGE_MODEL if self.is_offline(spec) else self.configured_model(spec)

    def context(self, spec: EvaluatorSpec, rubric: str) -> JudgeContext:
        return JudgeContext(
            rubric=rubric or spec.rubric,
            model=self.effective_model(spec),
            offline=self.is_offline(spec),
            api_base=self.llm.api_base,
        )
