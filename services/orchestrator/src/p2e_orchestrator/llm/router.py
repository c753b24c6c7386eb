"""Which model answers, and the port that reaches it.

`resolve_model` picks the model name for an agent: the configured one when its provider can
be used, else the embedded offline model. `build_model_port` returns the one ModelPort the
orchestrator calls: "offline/..." goes straight to OfflineModel (no litellm import at all),
everything else to LiteLLMModel, created and imported on first use.

Environment:
- P2E_LLM_OFFLINE_ONLY=1: every agent uses the offline model, and the port refuses any
  other model (the test-suite guard).
- P2E_LLM_VIA_LITELLM=1: offline models go through litellm's custom provider too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from p2e_kit.appconfig import OFFLINE_MODEL, LLMConfig
from p2e_kit.errors import FailedPrecondition, PreconditionViolation
from p2e_orchestrator.llm.litellm_backend import OFFLINE_PROVIDER, LiteLLMModel
from p2e_orchestrator.llm.offline import OfflineModel
from p2e_orchestrator.llm.port import ModelPort, ModelReply

PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "xai": ("XAI_API_KEY",),
    "azure": ("AZURE_API_KEY",),
    "bedrock": ("AWS_ACCESS_KEY_ID",),
    "vertex_ai": ("GOOGLE_APPLICATION_CREDENTIALS",),
}
# Local servers need no key: "auto" uses them as configured.
KEYLESS_PROVIDERS = {"ollama", "ollama_chat", "hosted_vllm", "lm_studio", "llamafile"}
_TRUE = {"1", "true", "yes", "on"}


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


def provider_of(model: str) -> str:
    """litellm's provider prefix ("openai/gpt-4o" -> "openai"); a bare name is OpenAI's."""
    return model.split("/", 1)[0].lower() if "/" in model else "openai"


def has_credentials(model: str, llm_config: LLMConfig, env: Mapping[str, str]) -> bool:
    provider = provider_of(model)
    if provider in KEYLESS_PROVIDERS:
        return True
    if provider == "openai" and llm_config.api_base and "api.openai.com" not in llm_config.api_base:
        return True  # an OpenAI-compatible local server
    names = PROVIDER_KEYS.get(provider, (f"{provider.upper()}_API_KEY",))
    return any(env.get(name, "").strip() for name in names)


def resolve_model(configured_model: str, llm_config: LLMConfig, env: Mapping[str, str]) -> str:
    """The model to call for an agent configured with `configured_model`."""
    if provider_of(configured_model) == OFFLINE_PROVIDER:
        return configured_model
    if _flag(env, "P2E_LLM_OFFLINE_ONLY") or llm_config.mode == "offline":
        return OFFLINE_MODEL
    if llm_config.mode == "provider" or has_credentials(configured_model, llm_config, env):
        return configured_model
    return OFFLINE_MODEL


class RoutingModel:
    """ModelPort: offline models answered in-process, others through litellm (lazily)."""

    def __init__(
        self, llm_config: LLMConfig, *, via_litellm: bool = False, offline_only: bool = False
    ):
        self._offline = OfflineModel()
        self._llm_config = llm_config
        self._via_litellm = via_litellm
        self._offline_only = offline_only
        self._litellm: LiteLLMModel | None = None

    def _hosted(self) -> LiteLLMModel:
        if self._litellm is None:
            self._litellm = LiteLLMModel(api_base=self._llm_config.api_base)
        return self._litellm

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        temperature: float | None = None,
    ) -> ModelReply:
        offline = provider_of(model) == OFFLINE_PROVIDER
        if not offline and self._offline_only:
            raise FailedPrecondition(
                f"model {model} refused: P2E_LLM_OFFLINE_ONLY is set",
                violations=[
                    PreconditionViolation("LLM", model, "only offline models may be called")
                ],
                reason="LLM_OFFLINE_ONLY",
            )
        port: ModelPort = self._offline if offline and not self._via_litellm else self._hosted()
        return await port.complete(
            model=model, messages=messages, tools=tools, temperature=temperature
        )


def build_model_port(llm_config: LLMConfig, env: Mapping[str, str] | None = None) -> ModelPort:
    """The orchestrator's ModelPort; `env` defaults to os.environ."""
    if env is None:
        env = os.environ
    return RoutingModel(
        llm_config,
        via_litellm=_flag(env, "P2E_LLM_VIA_LITELLM"),
        offline_only=_flag(env, "P2E_LLM_OFFLINE_ONLY"),
    )
