"""Settings of the tool-runner (environment prefix P2E_TOOL_RUNNER_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from p2e_kit.settings import DEFAULT_PORTS, ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="P2E_TOOL_RUNNER_", extra="ignore")
    service_name: ClassVar[str] = "tool_runner"

    port: int = DEFAULT_PORTS["tool_runner"]
    # Where the ledger-gateway is; empty means the kit Endpoints (P2E_LEDGER_ADDR).
    ledger_addr: str = ""
    ledger_deadline_seconds: float = 10.0
    # Wall-time limit of one tool execution.
    tool_timeout_seconds: float = 30.0
    # Result cache of side-effect-free tools.
    cache_max_entries: int = 1024
    # Work-queue worker: run it, how many calls at once, how many to fetch per request.
    worker_enabled: bool = True
    worker_concurrency: int = 16
    worker_fetch_batch: int = 16
    worker_fetch_timeout_seconds: float = 1.0
    # Extra tool modules to import and register, e.g. ["my_pkg.tools"].
    tool_modules: list[str] = []
