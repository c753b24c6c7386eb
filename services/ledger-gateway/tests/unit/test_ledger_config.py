from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2e_kit.appconfig import LedgerConfig
from p2e_kit.db import create_engine
from p2e_kit.errors import InvalidArgument
from p2e_ledger_gateway.canton.testing import FAKE_URL, fake_settings
from p2e_ledger_gateway.canton_money import CantonMoney
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.money_backend import SqlMoney
from p2e_ledger_gateway.server import ledger_options, money_backend

REPO_CONFIG = Path(__file__).resolve().parents[4] / "config"


def test_repo_config_loads() -> None:
    options = ledger_options(Settings(config_dir=REPO_CONFIG))
    assert (options.currency.asset, options.currency.scale) == ("P2E", 2)
    assert options.initial_balance == 100_00
    assert options.policies["child"].daily_cap == 200_00
    assert "agent_alpha" in options.configured_agents


def test_defaults_without_config(tmp_path: Path) -> None:
    options = ledger_options(Settings(config_dir=tmp_path))
    assert (options.initial_balance, options.currency.scale, options.policies) == (10000, 2, {})


def write(tmp_path: Path, ledger: dict) -> Settings:
    (tmp_path / "config.json").write_text(json.dumps({"ledger": ledger}))
    return Settings(config_dir=tmp_path)


async def test_backend_comes_from_config(tmp_path: Path) -> None:
    ledger_options(write(tmp_path, {"backend": "canton"}))  # a valid business configuration
    db = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"))
    try:
        sql = money_backend(LedgerConfig(), db, Currency())
        assert isinstance(sql, SqlMoney) and sql.endpoint == db.endpoint
        config = LedgerConfig(backend="canton", json_api_url=FAKE_URL)
        canton = money_backend(config, db, Currency(), canton_settings=fake_settings())
        assert isinstance(canton, CantonMoney) and canton.endpoint == FAKE_URL
        await canton.aclose()
        with pytest.raises(InvalidArgument, match="Daml"):  # Daml's Decimal has 10 digits
            money_backend(config, db, Currency(scale=12), canton_settings=fake_settings())
    finally:
        await db.close()


@pytest.mark.parametrize(
    "ledger",
    [
        {"initial_balance": 1.005},
        {"initial_balance": -1},
        {"policies": {"x": {"max_per_transfer": 0.001}}},
    ],
)
def test_bad_money_in_config_is_refused(tmp_path: Path, ledger: dict) -> None:
    with pytest.raises(InvalidArgument):
        ledger_options(write(tmp_path, ledger))


def test_scale_and_asset_come_from_config(tmp_path: Path) -> None:
    options = ledger_options(write(tmp_path, {"scale": 0, "asset": "PTS", "initial_balance": 5}))
    assert (options.currency.format(options.initial_balance), options.currency.asset) == (
        "5",
        "PTS",
    )


def test_settings_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2E_LEDGER_PORT", "6000")
    monkeypatch.setenv("P2E_LEDGER_DATABASE_URL", "postgresql://u:secret@db/ledger")
    settings = Settings()
    assert (settings.port, settings.db_url) == (6000, "postgresql://u:secret@db/ledger")


async def test_sqlite_synchronous_from_the_environment_reaches_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError
    from sqlalchemy import text

    from p2e_ledger_gateway.server import running_app

    assert Settings(config_dir=tmp_path).sqlite_synchronous == "normal"
    monkeypatch.setenv("P2E_LEDGER_SQLITE_SYNCHRONOUS", "maybe")
    with pytest.raises(ValidationError, match="sqlite_synchronous"):
        Settings(config_dir=tmp_path)
    monkeypatch.setenv("P2E_LEDGER_SQLITE_SYNCHRONOUS", "full")
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path / "data", publish_events=False)
    assert settings.sqlite_synchronous == "full"
    async with running_app(settings) as app:
        level = await app.db.write(lambda conn: conn.execute(text("PRAGMA synchronous")))
        assert level.scalar_one() == 2  # FULL on the gateway's writer
        assert app.writer is not None and app.writer.config.sqlite_synchronous == "full"
