"""The product configuration users edit: `config/config.json` and `config/agents.yml`.

Both files are the brief's formats; keys we do not use (e.g. the prototype's `redis`) are
accepted and ignored so an old config keeps loading.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from p2e_kit.errors import InvalidArgument

OFFLINE_MODEL = "offline/p2e"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelsConfig(_Lenient):
    default_model: str = "openai/gpt-4o"


class LLMConfig(_Lenient):
    api_base: str | None = None
    models: ModelsConfig = ModelsConfig()
    # "auto": the configured model when its provider key is set, else the offline model.
    # "offline": always the offline model. "provider": always the configured model.
    mode: Literal["auto", "offline", "provider"] = "auto"


class WalletPolicy(_Lenient):
    """Per-agent spending policy, enforced by the ledger."""

    max_per_transfer: Decimal | None = None
    daily_cap: Decimal | None = None
    allowed_recipients: list[str] | None = None
    approval_threshold: Decimal | None = None


class LedgerConfig(_Lenient):
    enabled: bool = True
    backend: Literal["sql", "canton"] = "sql"
    json_api_url: str = "http://localhost:7575"
    party_id: str = "p2engine::default"
    initial_balance: Decimal = Decimal("100")
    asset: str = "P2E"
    scale: int = Field(default=2, ge=0, le=18)
    policies: dict[str, WalletPolicy] = {}


class AppConfig(_Lenient):
    llm: LLMConfig = LLMConfig()
    ledger: LedgerConfig = LedgerConfig()


class AgentConfig(_Lenient):
    id: str
    type: str = "llm"
    llm_model: str = "openai/gpt-4o"
    tools: list[str] = []
    behavior_template: str = "default"

    @field_validator("id")
    @classmethod
    def _id_is_token(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "_-" for c in value):
            raise ValueError("agent ids are letters, digits, '_' and '-'")
        return value


class AgentsFile(_Lenient):
    agents: list[AgentConfig] = []


def load_app_config(config_dir: Path) -> AppConfig:
    """Read `config.json`; a missing file means all defaults."""
    path = config_dir / "config.json"
    if not path.exists():
        return AppConfig()
    try:
        # Decimals, not floats: 100.1 in the file is exactly 100.1 on the ledger.
        return AppConfig.model_validate(json.loads(path.read_text(), parse_float=Decimal))
    except (ValueError, ValidationError) as exc:
        raise InvalidArgument(f"{path}: {exc}", field="config.json") from exc


def load_agents(config_dir: Path) -> list[AgentConfig]:
    """Read `agents.yml`; ids must be unique."""
    path = config_dir / "agents.yml"
    if not path.exists():
        return []
    try:
        parsed = AgentsFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidArgument(f"{path}: {exc}", field="agents.yml") from exc
    seen: set[str] = set()
    for agent in parsed.agents:
        if agent.id in seen:
            raise InvalidArgument(f"{path}: agent {agent.id!r} is listed twice", field="agents")
        seen.add(agent.id)
    return parsed.agents
