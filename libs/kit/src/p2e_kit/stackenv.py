"""Environment for an isolated local stack (free ports, own data folder): tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from p2e_kit.natsd import free_ports

# settings prefix and client-address variable of each service
SERVICE_ENV = {
    "orchestrator": ("P2E_ORCHESTRATOR_", "P2E_ORCHESTRATOR_ADDR"),
    "tool-runner": ("P2E_TOOL_RUNNER_", "P2E_TOOL_RUNNER_ADDR"),
    "ledger-gateway": ("P2E_LEDGER_", "P2E_LEDGER_ADDR"),
    "evaluator": ("P2E_EVALUATOR_", "P2E_EVALUATOR_ADDR"),
    "artifact-store": ("P2E_ARTIFACTS_", "P2E_ARTIFACTS_ADDR"),
}


def isolated_stack_env(data_dir: Path, config_dir: Path) -> dict[str, str]:
    """Variables that put every port of a local stack on a free one and its files in data_dir."""
    nats_port, *ports = free_ports(1 + len(SERVICE_ENV))
    env = {
        "P2E_DATA_DIR": str(data_dir),
        "P2E_CONFIG_DIR": str(config_dir),
        "P2E_NATS_URL": f"nats://127.0.0.1:{nats_port}",
    }
    for (prefix, addr_var), port in zip(SERVICE_ENV.values(), ports, strict=True):
        env[f"{prefix}PORT"] = str(port)
        env[addr_var] = f"127.0.0.1:{port}"
    return env
