"""Settings every service shares, read from the environment (pydantic-settings).

Each service subclasses `ServiceSettings` with its own prefix (`P2E_LEDGER_`, ...). The
shared keys (`nats_url`, `data_dir`, `config_dir`, `log_level`) may also be given once,
unprefixed, as `P2E_NATS_URL`, `P2E_DATA_DIR`, ...; the prefixed form wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from p2e_kit.db import sqlite_url
from p2e_kit.ports import DEFAULT_NATS_URL, DEFAULT_PORTS

SHARED_KEYS = ("nats_url", "data_dir", "config_dir", "log_level")
__all__ = ["DEFAULT_NATS_URL", "DEFAULT_PORTS", "Endpoints", "ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Base of each service's `Settings`. Subclasses set `service_name` and an env prefix."""

    model_config = SettingsConfigDict(env_prefix="P2E_", extra="ignore")
    service_name: ClassVar[str] = "service"

    host: str = "127.0.0.1"
    port: int = 0
    nats_url: str = DEFAULT_NATS_URL
    data_dir: Path = Path(".p2engine")
    config_dir: Path = Path("config")
    database_url: str = ""
    log_level: str = "INFO"
    grpc_max_message_bytes: int = 16 * 1024 * 1024
    shutdown_grace_seconds: float = 5.0

    @model_validator(mode="before")
    @classmethod
    def _shared_from_unprefixed_env(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in SHARED_KEYS:
                env = os.environ.get(f"P2E_{key.upper()}")
                if key not in data and env is not None:
                    data[key] = env
        return data

    @property
    def db_url(self) -> str:
        """`database_url`, or a SQLite file named after the service under `data_dir`."""
        return self.database_url or sqlite_url(self.data_dir / f"{self.service_name}.db")

    @property
    def listen_address(self) -> str:
        return f"{self.host}:{self.port}"


class Endpoints(BaseSettings):
    """Where the services are, for clients (the CLI, and services calling each other)."""

    model_config = SettingsConfigDict(env_prefix="P2E_", extra="ignore")

    orchestrator_addr: str = f"127.0.0.1:{DEFAULT_PORTS['orchestrator']}"
    tool_runner_addr: str = f"127.0.0.1:{DEFAULT_PORTS['tool_runner']}"
    ledger_addr: str = f"127.0.0.1:{DEFAULT_PORTS['ledger']}"
    evaluator_addr: str = f"127.0.0.1:{DEFAULT_PORTS['evaluator']}"
    artifacts_addr: str = f"127.0.0.1:{DEFAULT_PORTS['artifacts']}"
