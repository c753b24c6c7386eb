"""The real `p2engine` entry point in a subprocess: start-up cost and what it imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

P2ENGINE = Path(sys.executable).parent / "p2engine"
HEAVY = {
    "litellm",
    "sqlalchemy",
    "pydantic_settings",
    "nats",
    "p2e_orchestrator",
    "p2e_tool_runner",
    "p2e_ledger_gateway",
    "p2e_evaluator",
    "p2e_artifact_store",
}
LAZY = {"grpc", "rich", "google", "p2engine"}  # only inside the commands that need them


def modules_after(code: str, env: dict[str, str]) -> set[str]:
    script = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.fixture
def env(isolated_env: dict[str, str]) -> dict[str, str]:
    return dict(os.environ)


def test_main_imports_only_typer(env: dict[str, str]) -> None:
    loaded = modules_after("import p2e_cli.main", env)
    assert not loaded & (HEAVY | LAZY), loaded & (HEAVY | LAZY)


def test_a_ledger_command_loads_no_service_code(env: dict[str, str]) -> None:
    code = (
        "from p2e_cli.main import app\n"
        "try:\n"
        "    app(['ledger', 'balance', 'agent_alpha'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    loaded = modules_after(code, env)
    assert "grpc" in loaded  # it did make the call
    assert not loaded & HEAVY, loaded & HEAVY


def test_help_lists_every_command(env: dict[str, str]) -> None:
    result = subprocess.run([str(P2ENGINE), "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("up", "down", "status", "logs", "ledger", "chat", "shell", "demo"):
        assert command in result.stdout


def test_stack_down_is_one_line_exit_1(env: dict[str, str]) -> None:
    began = time.monotonic()
    result = subprocess.run(
        [str(P2ENGINE), "ledger", "balance", "agent_alpha"], env=env, capture_output=True, text=True
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: cannot reach the ledger-gateway at {env['P2E_LEDGER_ADDR']}: "
        "is the stack running? (`p2engine up`)\n"
    )
    assert elapsed < 3.0, f"took {elapsed:.2f}s"


def test_bad_amount_is_exit_2_without_a_call(env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(P2ENGINE), "ledger", "transfer", "agent_alpha", "agent_beta", "lots"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: invalid amount 'lots': want a decimal number such as 25 or 25.50"
    )


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(P2ENGINE), "ledger", "history", "agent_alpha", "--limit", "many"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
