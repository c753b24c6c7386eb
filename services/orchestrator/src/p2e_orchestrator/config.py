"""Settings of the orchestrator (env prefix P2E_ORCHESTRATOR_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from p2e_kit.settings import DEFAULT_PORTS, ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="P2E_ORCHESTRATOR_", extra="ignore")
    service_name: ClassVar[str] = "orchestrator"

    port: int = DEFAULT_PORTS["orchestrator"]
    # Seconds a dispatched tool call may take before its result is DEADLINE_EXCEEDED.
    tool_timeout_seconds: float = 30.0
    # Model calls one turn may make before it stops with a clear message.
    max_model_calls: int = 8
    # Delegation: deepest child conversation (a top-level conversation has depth 0).
    max_delegation_depth: int = 3
    # Seconds between retries of artifacts whose publication failed (the outbox).
    outbox_interval_seconds: float = 2.0
    # Seconds a watcher waits for a change notification before polling the database.
    watch_poll_seconds: float = 1.0
