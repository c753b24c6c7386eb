"""Which model answers (resolve_model) and the port that dispatches to it (no litellm here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from p2e_kit.appconfig import OFFLINE_MODEL, LLMConfig
from p2e_kit.errors import FailedPrecondition
from p2e_orchestrator.llm import ModelReply, build_model_port, resolve_model
from p2e_orchestrator.llm.litellm_backend import _api_base_for, to_reply

AUTO = LLMConfig(mode="auto")
OPENAI_BASE = "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("model", "config", "env", "expected"),
    [
        ("openai/gpt-4o", LLMConfig(mode="offline"), {"OPENAI_API_KEY": "sk-x"}, OFFLINE_MODEL),
        ("openai/gpt-4o", AUTO, {}, OFFLINE_MODEL),
        ("openai/gpt-4o", AUTO, {"OPENAI_API_KEY": "  "}, OFFLINE_MODEL),
        ("openai/gpt-4o", AUTO, {"OPENAI_API_KEY": "sk-x"}, "openai/gpt-4o"),
        ("gpt-4o", AUTO, {"OPENAI_API_KEY": "sk-x"}, "gpt-4o"),
        ("anthropic/claude-sonnet-4", AUTO, {"OPENAI_API_KEY": "sk-x"}, OFFLINE_MODEL),
        (
            "anthropic/claude-sonnet-4",
            AUTO,
            {"ANTHROPIC_API_KEY": "k"},
            "anthropic/claude-sonnet-4",
        ),
        ("gemini/gemini-2.0-flash", AUTO, {"GOOGLE_API_KEY": "k"}, "gemini/gemini-2.0-flash"),
        ("somecloud/model-1", AUTO, {"SOMECLOUD_API_KEY": "k"}, "somecloud/model-1"),
        ("somecloud/model-1", AUTO, {}, OFFLINE_MODEL),
        ("ollama/llama3", AUTO, {}, "ollama/llama3"),
        ("openai/local", LLMConfig(api_base="http://127.0.0.1:8000/v1"), {}, "openai/local"),
        ("openai/gpt-4o", LLMConfig(api_base=OPENAI_BASE), {}, OFFLINE_MODEL),
        ("openai/gpt-4o", LLMConfig(mode="provider"), {}, "openai/gpt-4o"),
        ("openai/gpt-4o", LLMConfig(mode="provider"), {"P2E_LLM_OFFLINE_ONLY": "1"}, OFFLINE_MODEL),
        (
            "openai/gpt-4o",
            AUTO,
            {"OPENAI_API_KEY": "k", "P2E_LLM_OFFLINE_ONLY": "true"},
            OFFLINE_MODEL,
        ),
        (
            "openai/gpt-4o",
            AUTO,
            {"OPENAI_API_KEY": "k", "P2E_LLM_OFFLINE_ONLY": "0"},
            "openai/gpt-4o",
        ),
        ("offline/p2e", LLMConfig(mode="provider"), {"OPENAI_API_KEY": "k"}, "offline/p2e"),
    ],
)
def test_resolve_model(model: str, config: LLMConfig, env: dict[str, str], expected: str) -> None:
    assert resolve_model(model, config, env) == expected


async def test_port_answers_offline_models_in_process() -> None:
    port = build_model_port(AUTO, env={})
    messages = [{"role": "user", "content": "Check my balance"}]
    tools = [{"type": "function", "function": {"name": "check_balance", "parameters": {}}}]
    answer = await port.complete(model=OFFLINE_MODEL, messages=messages, tools=tools)
    assert [c.name for c in answer.tool_calls] == ["check_balance"]
    assert answer.tool_calls[0].arguments == "{}"


async def test_offline_only_guard_refuses_hosted_models() -> None:
    port = build_model_port(AUTO, env={"P2E_LLM_OFFLINE_ONLY": "1"})
    with pytest.raises(FailedPrecondition) as caught:
        await port.complete(model="openai/gpt-4o", messages=[], tools=[])
    assert caught.value.reason == "LLM_OFFLINE_ONLY"


def test_offline_path_never_imports_litellm() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        from p2e_kit.appconfig import LLMConfig
        from p2e_orchestrator.llm import build_model_port, resolve_model
        model = resolve_model("openai/gpt-4o", LLMConfig(), {})
        port = build_model_port(LLMConfig(), env={})
        reply = asyncio.run(port.complete(model=model, messages=[{"role": "user", "content": "hi"}], tools=[]))
        assert reply.content, reply
        assert "litellm" not in sys.modules and "openai" not in sys.modules, "heavy import"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("model", "api_base", "expected"),
    [
        ("openai/gpt-4o", OPENAI_BASE, OPENAI_BASE),
        ("anthropic/claude-sonnet-4", OPENAI_BASE, None),
        ("anthropic/claude-sonnet-4", "https://proxy.example/v1", "https://proxy.example/v1"),
        ("offline/p2e", "https://proxy.example/v1", None),
        ("openai/gpt-4o", None, None),
    ],
)
def test_api_base_is_passed_only_where_it_belongs(
    model: str, api_base: str | None, expected: str | None
) -> None:
    assert _api_base_for(model, api_base) == expected


def test_to_reply_reads_openai_shaped_responses() -> None:
    response = {
        "model": "gpt-4o-2024",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        },
                        {"function": {"name": "check_balance", "arguments": {}}},
                    ],
                }
            }
        ],
    }
    reply = to_reply(response, "openai/gpt-4o")
    assert reply.content is None and reply.model == "gpt-4o-2024"
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("get_weather", '{"city": "Oslo"}'),
        ("check_balance", "{}"),
    ]
    assert reply.tool_calls[0].id == "call_a" and reply.tool_calls[1].id.startswith("call_")
    text = to_reply({"choices": [{"message": {"content": "Hi"}}]}, "m")
    assert text == ModelReply(content="Hi", tool_calls=[], model="m")
