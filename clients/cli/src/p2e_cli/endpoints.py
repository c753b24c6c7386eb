"""Where the services are: names, env prefixes, default ports and addresses.

Read from the environment with `os` only: `p2e_kit.settings` pulls in pydantic-settings and
SQLAlchemy (~0.8 s), too slow for a command that must answer in well under a second; the
defaults come from the dependency-free `p2e_kit.ports`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from p2e_kit.ports import DEFAULT_NATS_URL, DEFAULT_PORTS

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServiceInfo:
    """One of the five services, as the CLI and the supervisor know it."""

    key: str  # DEFAULT_PORTS key, e.g. "ledger"
    name: str  # display name, e.g. "ledger-gateway"
    module: str  # `python -m` package, e.g. "p2e_ledger_gateway"
    env_prefix: str  # settings prefix, e.g. "P2E_LEDGER_"

    @property
    def port_env(self) -> str:
        return f"{self.env_prefix}PORT"

    @property
    def addr_env(self) -> str:
        return f"{self.env_prefix}ADDR"


# In start order: the first three need only NATS, the last two call the others.
SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo("artifacts", "artifact-store", "p2e_artifact_store", "P2E_ARTIFACTS_"),
    ServiceInfo("ledger", "ledger-gateway", "p2e_ledger_gateway", "P2E_LEDGER_"),
    ServiceInfo("tool_runner", "tool-runner", "p2e_tool_runner", "P2E_TOOL_RUNNER_"),
    ServiceInfo("orchestrator", "orchestrator", "p2e_orchestrator", "P2E_ORCHESTRATOR_"),
    ServiceInfo("evaluator", "evaluator", "p2e_evaluator", "P2E_EVALUATOR_"),
)
BY_KEY = {s.key: s for s in SERVICES}

_ALIASES = {
    "artifact": "artifacts",
    "artifact-store": "artifacts",
    "artifact_store": "artifacts",
    "ledger-gateway": "ledger",
    "ledger_gateway": "ledger",
    "tool-runner": "tool_runner",
    "tools": "tool_runner",
}


def lookup(name: str) -> ServiceInfo | None:
    """A service by key, display name or a common alias ("ledger", "ledger-gateway", ...)."""
    key = _ALIASES.get(name.lower(), name.lower().replace("-", "_"))
    return BY_KEY.get(key)


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def split_address(address: str, source: str = "address") -> tuple[str, int]:
    """("127.0.0.1", 50063) from "127.0.0.1:50063"; ValueError naming `source` when bad."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad {source} {address!r}: want host:port, e.g. 127.0.0.1:50063")
    return host.strip("[]") or LOOPBACK, int(port)


def client_address(service: ServiceInfo) -> str:
    """Where clients reach a service: P2E_<X>_ADDR, else 127.0.0.1:P2E_<X>_PORT, else the default."""
    addr = _env(service.addr_env)
    if addr:
        split_address(addr, service.addr_env)
        return addr
    return f"{LOOPBACK}:{listen_port(service)}"


def listen_port(service: ServiceInfo) -> int:
    """The port `p2engine up` serves a service on: P2E_<X>_PORT, else the port of a loopback
    P2E_<X>_ADDR, else the default."""
    port = _env(service.port_env)
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad {service.port_env} {port!r}: want a port number")
        return int(port)
    addr = _env(service.addr_env)
    if addr:
        host, addr_port = split_address(addr, service.addr_env)
        if is_loopback(host):
            return addr_port
    return DEFAULT_PORTS[service.key]


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def nats_url() -> str:
    return _env("P2E_NATS_URL") or DEFAULT_NATS_URL


def nats_host_port(url: str | None = None) -> tuple[str, int]:
    """Host and port of the first server of a NATS URL (default port 4222)."""
    text = url or nats_url()
    rest = text.split("://", 1)[-1].split(",", 1)[0].rsplit("@", 1)[-1].rstrip("/")
    if ":" not in rest:
        return rest or LOOPBACK, 4222
    return split_address(rest, f"P2E_NATS_URL {text!r}:")


def data_dir() -> Path:
    return Path(_env("P2E_DATA_DIR") or ".p2engine").absolute()


def config_dir() -> Path:
    return Path(_env("P2E_CONFIG_DIR") or "config").absolute()
