"""The configured agents (config/agents.yml) and the model that actually answers for each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2e_kit.appconfig import AgentConfig, load_agents
from p2e_kit.errors import InvalidArgument, NotFound
from p2e_orchestrator import behaviors

log = logging.getLogger(__name__)

# configured model name (litellm form) -> the model that answers ("offline/p2e" without a key)
ModelResolver = Callable[[str], str]


@dataclass(frozen=True)
class Agent:
    id: str
    type: str
    llm_model: str
    tools: tuple[str, ...]
    behavior_template: str
    effective_model: str


class AgentDirectory:
    """Agents by id, with their behavior templates checked once at load."""

    def __init__(self, configs: list[AgentConfig], resolve_model: ModelResolver) -> None:
        self._resolve_model = resolve_model
        self._agents: dict[str, Agent] = {}
        for config in configs:
            template = behaviors.resolve(config.behavior_template, owner=f"agent {config.id}")
            self._agents[config.id] = Agent(
                id=config.id,
                type=config.type,
                llm_model=config.llm_model,
                tools=tuple(config.tools),
                behavior_template=template,
                effective_model=resolve_model(config.llm_model),
            )

    @classmethod
    def load(cls, config_dir: Path, resolve_model: ModelResolver) -> AgentDirectory:
        configs = load_agents(config_dir)
        if not configs:
            log.warning("no agents configured in %s/agents.yml", config_dir)
        return cls(configs, resolve_model)

    def effective_model(self, configured: str) -> str:
        return self._resolve_model(configured)

    def get(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise NotFound(
                f"agent {agent_id!r} not found (configured: {', '.join(sorted(self._agents))})",
                reason="AGENT_NOT_FOUND",
            ) from None

    def exists(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def list(self, *, page_size: int = 0, page_token: str = "") -> tuple[list[Agent], str]:
        """Agents by id; the page token is the offset of the next page."""
        ordered = sorted(self._agents.values(), key=lambda a: a.id)
        try:
            start = int(page_token or "0")
        except ValueError:
            raise InvalidArgument("bad page token", field="page_token") from None
        if start < 0 or page_size < 0:
            raise InvalidArgument(
                "page_size and page_token must not be negative", field="page_size"
            )
        end = start + page_size if page_size else len(ordered)
        return ordered[start:end], str(end) if end < len(ordered) else ""
