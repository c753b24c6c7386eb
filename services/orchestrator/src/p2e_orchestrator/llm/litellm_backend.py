"""Hosted models through litellm, and the offline model as a litellm custom provider.

`import litellm` costs seconds, so it happens on first use only (`_litellm()`), never at
module import; LITELLM_LOCAL_MODEL_COST_MAP is set first so litellm never fetches its price
map over the network.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

from p2e_kit.errors import DependencyUnavailable
from p2e_orchestrator.llm.offline import OfflineModel
from p2e_orchestrator.llm.port import ModelReply, ToolCallRequest

logger = logging.getLogger(__name__)

OFFLINE_PROVIDER = "offline"
_OPENAI_BASE_HOST = "api.openai.com"


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # no "Give Feedback" banners printed on errors
    return litellm


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def to_reply(response: Any, model: str) -> ModelReply:
    """A litellm ModelResponse (OpenAI shape) as a ModelReply."""
    choices = _field(response, "choices") or []
    message = _field(choices[0], "message") if choices else None
    calls: list[ToolCallRequest] = []
    for raw in _field(message, "tool_calls") or []:
        function = _field(raw, "function")
        arguments = _field(function, "arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments or {})
        # Some providers omit ids; the id keys the execution, so it must be unique.
        call_id = _field(raw, "id") or f"call_{uuid.uuid4().hex[:24]}"
        calls.append(
            ToolCallRequest(
                id=str(call_id), name=str(_field(function, "name")), arguments=arguments
            )
        )
    content = _field(message, "content")
    return ModelReply(
        content=content or None, tool_calls=calls, model=str(_field(response, "model") or model)
    )


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def _api_base_for(model: str, api_base: str | None) -> str | None:
    """The configured api_base, except the OpenAI default for another provider's model."""
    if not api_base or _provider(model) == OFFLINE_PROVIDER:
        return None
    if _OPENAI_BASE_HOST in api_base and _provider(model) != "openai":
        return None
    return api_base


def _unavailable(model: str, exc: Exception) -> DependencyUnavailable:
    name = type(exc).__name__
    reason = {
        "AuthenticationError": "LLM_AUTH_FAILED",
        "RateLimitError": "LLM_RATE_LIMITED",
        "Timeout": "LLM_TIMEOUT",
        "APITimeoutError": "LLM_TIMEOUT",
    }.get(name, "LLM_PROVIDER_ERROR")
    first_line = (str(exc).strip().splitlines() or [name])[0][:300]
    return DependencyUnavailable(f"model {model}: {name}: {first_line}", reason=reason)


class LiteLLMModel:
    """ModelPort over `litellm.acompletion` (any provider litellm knows, plus `offline/`)."""

    def __init__(self, *, api_base: str | None = None, timeout: float | None = 120.0) -> None:
        self._api_base = api_base
        self._timeout = timeout

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        temperature: float | None = None,
    ) -> ModelReply:
        litellm = _litellm()
        if _provider(model) == OFFLINE_PROVIDER:
            register_offline_provider()
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "timeout": self._timeout}
        if tools:
            kwargs["tools"] = tools
        if temperature is not None:
            kwargs["temperature"] = temperature
        api_base = _api_base_for(model, self._api_base)
        if api_base:
            kwargs["api_base"] = api_base
        import openai  # litellm's exceptions subclass openai's; already imported by litellm

        try:
            response = await litellm.acompletion(**kwargs)
        except openai.APIError as exc:
            logger.warning("model call failed: %s", exc.__class__.__name__)
            raise _unavailable(model, exc) from exc
        return to_reply(response, model)


def _offline_response(litellm: Any, model: str, messages: list[Any], tools: Any) -> Any:
    reply = OfflineModel().reply(
        model=f"{OFFLINE_PROVIDER}/{model}", messages=messages, tools=tools
    )
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    finish = "tool_calls" if reply.tool_calls else "stop"
    return litellm.ModelResponse(
        model=reply.model, choices=[{"index": 0, "finish_reason": finish, "message": message}]
    )


def register_offline_provider() -> None:
    """Route "offline/<anything>" through litellm to the OfflineModel (idempotent)."""
    litellm = _litellm()
    entries = [e for e in litellm.custom_provider_map if e.get("provider") == OFFLINE_PROVIDER]
    if entries:
        return

    class OfflineLLM(litellm.CustomLLM):
        """litellm CustomLLM: tools arrive in optional_params["tools"]; replies carry tool_calls."""

        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            params = kwargs.get("optional_params") or {}
            return _offline_response(litellm, model, messages, params.get("tools"))

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            return self.completion(model, messages, *args, **kwargs)

    litellm.custom_provider_map = [
        *litellm.custom_provider_map,
        {"provider": OFFLINE_PROVIDER, "custom_handler": OfflineLLM()},
    ]
