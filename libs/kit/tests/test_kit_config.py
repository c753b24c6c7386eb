"""Settings and the product config files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from p2e_kit.appconfig import load_agents, load_app_config
from p2e_kit.db import normalize_url
from p2e_kit.errors import InvalidArgument
from p2e_kit.ids import new_id
from p2e_kit.settings import ServiceSettings

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config"


def test_repo_config_loads_exact_amounts():
    config = load_app_config(REPO_CONFIG)
    assert config.ledger.initial_balance == Decimal("100")
    ids = [a.id for a in load_agents(REPO_CONFIG)]
    assert {"agent_alpha", "agent_beta", "agent_helper", "treasurer", "child"} <= set(ids)


def test_json_floats_are_read_as_decimals(tmp_path):
    (tmp_path / "config.json").write_text('{"ledger": {"initial_balance": 0.1}}')
    assert load_app_config(tmp_path).ledger.initial_balance == Decimal("0.1")


def test_duplicate_agent_is_rejected(tmp_path):
    (tmp_path / "agents.yml").write_text("agents:\n  - id: a\n  - id: a\n")
    with pytest.raises(InvalidArgument, match="listed twice"):
        load_agents(tmp_path)


def test_missing_files_mean_defaults(tmp_path):
    assert load_agents(tmp_path) == []
    assert load_app_config(tmp_path).ledger.scale == 2


def test_shared_settings_from_unprefixed_env(monkeypatch, tmp_path):
    class Settings(ServiceSettings):
        model_config = ServiceSettings.model_config | {"env_prefix": "P2E_DEMO_"}
        service_name = "demo"

    monkeypatch.setenv("P2E_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("P2E_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("P2E_DEMO_PORT", "1234")
    settings = Settings()
    assert settings.nats_url == "nats://127.0.0.1:1"
    assert settings.port == 1234
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path}/demo.db"
    monkeypatch.setenv("P2E_DEMO_NATS_URL", "nats://127.0.0.1:2")
    assert Settings().nats_url == "nats://127.0.0.1:2"


def test_urls_and_ids():
    assert normalize_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    a, b = new_id("tr"), new_id("tr")
    assert a != b and a.startswith("tr_") and len(a) == 35
