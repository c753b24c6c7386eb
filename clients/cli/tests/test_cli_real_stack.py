"""The REAL stack through the real `p2engine` entry point: `up` (nats-server from the wheel and
the five service packages as detached processes) in a temp data folder on free ports, the
offline demo, one-line errors from real services, `up` twice, `down`."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2e_cli import endpoints
from p2e_kit.stackenv import isolated_stack_env

pytestmark = pytest.mark.e2e

P2ENGINE = Path(sys.executable).parent / "p2engine"
REPO = Path(__file__).resolve().parents[3]
MISSING = [
    s.module for s in endpoints.SERVICES if importlib.util.find_spec(f"{s.module}.__main__") is None
]


def p2engine(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(P2ENGINE), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def stack_env(data_dir: Path) -> dict[str, str]:
    """The environment of a stack of our own: temp data folder, free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2E_")}
    env.update(isolated_stack_env(data_dir, REPO / "config"))
    env.update(P2E_LLM_OFFLINE_ONLY="1", USER="tester")
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if MISSING:
        pytest.skip(f"service packages not runnable yet: {', '.join(MISSING)}")
    env = stack_env(tmp_path_factory.mktemp("stack") / "data")
    began = time.monotonic()
    up = p2engine(env, "up")
    env["UP_SECONDS"] = f"{time.monotonic() - began:.2f}"
    env["UP_STDOUT"] = up.stdout
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        yield env
    finally:
        p2engine(env, "down")


def test_up_reports_every_service_serving(stack: dict[str, str]) -> None:
    out = stack["UP_STDOUT"]
    assert "The stack is up in" in out
    for label in ("nats-server", "artifact-store", "ledger-gateway", "tool-runner", "evaluator"):
        assert label in out
    assert out.count("SERVING") == 5


def test_up_twice_says_already_running(stack: dict[str, str]) -> None:
    before = json.loads(p2engine(stack, "status", "--json").stdout)
    again = p2engine(stack, "up")
    assert again.returncode == 0
    assert "already running" in again.stdout
    assert json.loads(p2engine(stack, "status", "--json").stdout) == before
    assert {row["status"] for row in before} == {"SERVING", "running"}


def test_demo_and_balance(stack: dict[str, str]) -> None:
    demo = p2engine(stack, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "agent_alpha> " in demo.stdout
    assert "agent_beta balance: 125.00 P2E" in demo.stdout
    count = int(demo.stdout.rsplit(":", 1)[1].strip())
    assert count >= 10
    balance = p2engine(stack, "ledger", "balance", "agent_alpha")
    assert balance.stdout.strip() == "agent_alpha: 75.00 P2E"
    # The demo's transfer was written by the gateway's batcher: `ledger debug` counts it.
    debug = json.loads(p2engine(stack, "ledger", "debug", "--json").stdout)
    assert int(debug["transfer_batches"]) >= 1
    assert int(debug["batched_transfers"]) >= int(debug["transfer_batches"])
    shown = p2engine(stack, "ledger", "debug")
    assert shown.returncode == 0 and "per batch" in shown.stdout, shown.stdout + shown.stderr


def test_a_script_retries_a_transfer_safely(stack: dict[str, str]) -> None:
    p2engine(stack, "ledger", "init")
    args = ("ledger", "transfer", "agent_beta", "agent_helper", "1.25", "--reason", "retry")
    first = p2engine(stack, *args, "--request-id", "script-r1", "--json")
    again = p2engine(stack, *args, "--request-id", "script-r1", "--json")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    sent, replay = json.loads(first.stdout), json.loads(again.stdout)
    assert replay["id"] == sent["id"]
    assert (sent["replayed"], replay["replayed"]) == (False, True)
    assert list(replay) == list(sent)  # the same keys in the same order, for scripts that diff
    history = json.loads(p2engine(stack, "ledger", "history", "agent_helper", "--json").stdout)
    assert [t["id"] for t in history["transfers"]].count(sent["id"]) == 1


def test_real_errors_are_one_line(stack: dict[str, str]) -> None:
    p2engine(stack, "ledger", "init")
    missing = p2engine(stack, "ledger", "balance", "nobody")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: not found: ")
    assert missing.stderr.count("\n") == 1
    broke = p2engine(stack, "ledger", "transfer", "agent_helper", "agent_beta", "100000")
    assert broke.returncode == 1
    assert broke.stderr.startswith("error: failed precondition: ")
    assert broke.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr + broke.stderr


def test_up_restarts_a_killed_service_after_noting_its_stale_pid_file(
    stack: dict[str, str],
) -> None:
    before = {row["service"]: row["pid"] for row in status_rows(stack)}
    os.kill(before["ledger-gateway"], signal.SIGKILL)
    wait_gone(before["ledger-gateway"])
    up = p2engine(stack, "up")
    assert up.returncode == 0, up.stderr
    assert (
        f"note: removed the stale PID file of ledger-gateway (pid {before['ledger-gateway']} "
        "has exited)" in up.stderr
    )
    after = {row["service"]: row["pid"] for row in status_rows(stack)}
    assert after["ledger-gateway"] != before["ledger-gateway"]
    assert {k: v for k, v in after.items() if k != "ledger-gateway"} == {
        k: v for k, v in before.items() if k != "ledger-gateway"
    }
    assert p2engine(stack, "ledger", "balance", "agent_beta").returncode == 0


def test_busy_port_when_starting(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    port = int(env["P2E_TOOL_RUNNER_PORT"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        up = p2engine(env, "up")
    assert up.returncode == 1
    assert up.stderr == (
        f"error: port {port} (tool-runner) is already in use by another program: "
        "stop it or set P2E_TOOL_RUNNER_PORT to a free port\n"
    )
    assert not list((tmp_path / "data" / "run").glob("*.pid"))


def test_down_stops_only_ours(stack: dict[str, str]) -> None:
    state_file = Path(stack["P2E_DATA_DIR"]) / "run" / "stack.json"
    state = json.loads(state_file.read_text())
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    evaluator = next(p for p in state["processes"] if p["name"] == "evaluator")
    real_evaluator, evaluator["pid"] = evaluator["pid"], stranger.pid
    state_file.write_text(json.dumps(state))
    try:
        down = p2engine(stack, "down")
        assert down.returncode == 0
        assert down.stdout.count("stopped") + down.stdout.count("killed") == 5
        assert f"pid {stranger.pid} of evaluator's PID file now runs" in down.stderr
        assert stranger.poll() is None  # the stranger lives on
    finally:
        stranger.kill()
        stranger.wait()
        os.kill(real_evaluator, signal.SIGTERM)
        wait_gone(real_evaluator)
    status = status_rows(stack)
    assert {row["status"] for row in status} == {"down"}
    assert not list(state_file.parent.glob("*.pid"))
    after = p2engine(stack, "ledger", "balance", "agent_alpha")
    assert after.returncode == 1
    assert after.stderr.startswith("error: cannot reach the ledger-gateway at 127.0.0.1:")


def status_rows(env: dict[str, str]) -> list[dict[str, object]]:
    return json.loads(p2engine(env, "status", "--json").stdout)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still runs")


@pytest.mark.skipif(bool(MISSING), reason=f"service packages not runnable yet: {MISSING}")
def test_a_service_dying_at_start_up_shows_its_log_and_stops_the_rest(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    env["P2E_LEDGER_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"  # cannot connect
    try:
        up = p2engine(env, "up")
        assert up.returncode == 1
        first, *log_lines = up.stderr.splitlines()
        assert first.startswith("error: ledger-gateway exited during start-up with exit code ")
        assert first.endswith(f"last lines of {tmp_path / 'data' / 'logs' / 'ledger.log'}:")
        assert log_lines
        assert all(line.startswith("  | ") for line in log_lines)
        assert "Traceback" not in up.stderr.split("  | ")[0]
        status = json.loads(p2engine(env, "status", "--json").stdout)
        assert {row["status"] for row in status} == {"down"}
        assert {row["pid"] for row in status} == {None}
        assert not list((tmp_path / "data" / "run").glob("*.pid"))
    finally:
        p2engine(env, "down")
