"""Behavior templates: named system prompts an agent (or a conversation override) selects."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

DEFAULT = "default"

TEMPLATES: dict[str, str] = {
    DEFAULT: (
        "You are {agent_id}, an agent in a multi-agent system with a wallet of P2E units. "
        "Answer clearly and briefly. Use your tools when they help: never invent a balance, "
        "a transfer or a tool result. When a request is ambiguous (for example an amount you "
        "cannot read), ask the user instead of guessing."
    ),
    "financial_expert": (
        "You are {agent_id}, a careful financial agent managing a wallet of P2E units. "
        "Check balances before moving money, state every amount exactly, transfer only what "
        "you were asked to, and report each transfer's outcome. Never guess an amount."
    ),
    "helpful_assistant": (
        "You are {agent_id}, a friendly and helpful assistant. Answer the request directly, "
        "use your tools to look things up, and keep answers short and concrete."
    ),
    "weather_expert": (
        "You are {agent_id}, a weather specialist. Use get_weather for every city you are "
        "asked about, report the conditions and temperature precisely, and add one practical tip."
    ),
}


def known(template: str) -> bool:
    return template in TEMPLATES


def resolve(template: str, *, owner: str = "") -> str:
    """The template's name if known, else "default" (with a warning naming the owner)."""
    if not template or template in TEMPLATES:
        return template or DEFAULT
    log.warning("unknown behavior template %r for %s: using %r", template, owner or "?", DEFAULT)
    return DEFAULT


def system_prompt(template: str, *, agent_id: str) -> str:
    """The system prompt of a template for an agent."""
    return TEMPLATES[resolve(template, owner=agent_id)].format(agent_id=agent_id)
