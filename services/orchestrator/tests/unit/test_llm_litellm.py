"""The real litellm path: "offline/p2e" through litellm.acompletion's custom provider.

This is the only test module that imports litellm (~5-12 s, once).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from p2e_kit.appconfig import OFFLINE_MODEL, LLMConfig
from p2e_kit.errors import DependencyUnavailable
from p2e_orchestrator.llm import OfflineModel, build_model_port
from p2e_orchestrator.llm.litellm_backend import LiteLLMModel, _litellm, register_offline_provider

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": name,
            "parameters": {"type": "object", "properties": props},
        },
    }
    for name, props in (
        ("get_weather", {"city": {"type": "string"}}),
        ("check_balance", {}),
        ("transfer_funds", {"to_agent": {"type": "string"}, "amount": {"type": "string"}}),
    )
]
SYSTEM = {"role": "system", "content": "You are agent_alpha, an agent in a multi-agent system."}


def conversation(text: str) -> list[dict[str, Any]]:
    return [SYSTEM, {"role": "user", "content": text}]


async def test_litellm_acompletion_routes_offline_model_and_returns_tool_calls() -> None:
    litellm = _litellm()
    register_offline_provider()
    register_offline_provider()  # idempotent
    assert [e["provider"] for e in litellm.custom_provider_map].count("offline") == 1
    response = await litellm.acompletion(
        model=OFFLINE_MODEL,
        messages=conversation("Transfer 25 to agent_beta for helping with analysis"),
        tools=TOOLS,
        temperature=0.3,
    )
    assert isinstance(response, litellm.ModelResponse)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "transfer_funds"
    assert json.loads(call.function.arguments) == {
        "to_agent": "agent_beta",
        "amount": "25",
        "reason": "helping with analysis",
    }
    direct = OfflineModel().reply(
        model=OFFLINE_MODEL,
        messages=conversation("Transfer 25 to agent_beta for helping with analysis"),
        tools=TOOLS,
    )
    assert call.id == direct.tool_calls[0].id


async def test_litellm_model_port_gives_the_same_replies_as_the_direct_path() -> None:
    hosted = LiteLLMModel(api_base="https://api.openai.com/v1")
    direct = OfflineModel()
    for text in (
        "What's the weather in major cities?",
        "Hello! What can you do?",
        "Check my balance",
    ):
        via = await hosted.complete(model=OFFLINE_MODEL, messages=conversation(text), tools=TOOLS)
        same = await direct.complete(model=OFFLINE_MODEL, messages=conversation(text), tools=TOOLS)
        assert via.content == same.content
        assert via.tool_calls == same.tool_calls
        assert via.model == OFFLINE_MODEL


async def test_router_sends_offline_through_litellm_when_asked() -> None:
    port = build_model_port(LLMConfig(), env={"P2E_LLM_VIA_LITELLM": "1"})
    reply = await port.complete(
        model=OFFLINE_MODEL, messages=conversation("What's the weather in Paris?"), tools=TOOLS
    )
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


async def test_provider_errors_become_dependency_unavailable() -> None:
    litellm = _litellm()
    from litellm.llms.custom_llm import CustomLLMError

    class Broken(litellm.CustomLLM):
        async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
            raise CustomLLMError(status_code=503, message="provider down")

    saved = list(litellm.custom_provider_map)
    litellm.custom_provider_map = [*saved, {"provider": "p2ebroken", "custom_handler": Broken()}]
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            await LiteLLMModel().complete(
                model="p2ebroken/x", messages=conversation("hi"), tools=[]
            )
    finally:
        litellm.custom_provider_map = saved
    assert "provider down" in str(caught.value)
    assert caught.value.reason == "LLM_PROVIDER_ERROR"
