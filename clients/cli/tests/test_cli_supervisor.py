"""The supervisor with a real nats-server and stand-in services (real gRPC health servers)
in a temp data folder on free ports: start order, `up` twice, stale PID files, strangers,
busy ports, crashes during start-up, SIGKILL after the timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2e_cli import endpoints
from p2e_cli.main import app
from p2e_cli.procs import is_alive, last_run, tail_at
from p2e_cli.stack import NATS, StackError, Supervisor

STANDIN = Path(__file__).with_name("cli_standin_service.py")
KEYS = [s.key for s in endpoints.SERVICES]
runner = CliRunner()


def standins() -> dict[str, list[str]]:
    return {key: [sys.executable, str(STANDIN), key] for key in KEYS}


@pytest.fixture
def supervisor(isolated_env: dict[str, str]) -> Iterator[Supervisor]:
    sup = Supervisor(commands=standins())
    try:
        yield sup
    finally:
        sup.down(timeout=2.0)


def pids(sup: Supervisor) -> dict[str, int]:
    return {name: proc.pid for name, proc in sup.load().items()}


def test_up_starts_nats_then_the_services_and_down_stops_them(
    supervisor: Supervisor, isolated_env: dict[str, str]
) -> None:
    result = supervisor.up(timeout=20)
    assert result.started == [NATS, *KEYS]
    assert result.seconds < 10
    rows = {row.name: row for row in supervisor.status()}
    assert rows[NATS].health == "running"
    assert all(rows[key].health == "SERVING" for key in KEYS)
    assert {row.address for row in rows.values() if row.name != NATS} == {
        isolated_env[endpoints.BY_KEY[key].addr_env] for key in KEYS
    }
    layout = supervisor.layout
    state = json.loads(layout.state_file.read_text())
    assert [p["name"] for p in state["processes"]] == [NATS, *KEYS]
    for name in [NATS, *KEYS]:
        assert int(layout.pid_file(name).read_text()) == pids(supervisor)[name]
        assert layout.log_file(name).exists()
    seen = json.loads((layout.root / "standin_ledger.json").read_text())
    assert seen["P2E_NATS_URL"] == isolated_env["P2E_NATS_URL"]
    assert seen["P2E_DATA_DIR"] == str(layout.root)
    assert seen["P2E_CONFIG_DIR"] == isolated_env["P2E_CONFIG_DIR"]
    assert seen["P2E_LEDGER_PORT"] == isolated_env["P2E_LEDGER_PORT"]
    assert seen["P2E_ARTIFACTS_ADDR"] == isolated_env["P2E_ARTIFACTS_ADDR"]

    running = pids(supervisor)
    results, notes = supervisor.down(timeout=5)
    assert notes == []
    assert [proc.name for proc, _ in results] == [*reversed(KEYS), NATS]
    assert {outcome for _, outcome in results} == {"stopped"}
    assert not any(is_alive(pid) for pid in running.values())
    assert not list(layout.run.glob("*.pid"))
    assert not layout.state_file.exists()


def test_up_twice_is_safe(supervisor: Supervisor) -> None:
    supervisor.up(timeout=20)
    before = pids(supervisor)
    again = supervisor.up(timeout=20)
    assert again.already_running
    assert pids(supervisor) == before


def test_up_restarts_what_died_and_notes_the_stale_pid_file(supervisor: Supervisor) -> None:
    supervisor.up(timeout=20)
    before = pids(supervisor)
    os.kill(before["ledger"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(before["ledger"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    result = supervisor.up(timeout=20)
    assert result.started == ["ledger"]
    assert result.notes == [
        f"removed the stale PID file of ledger-gateway (pid {before['ledger']} has exited)"
    ]
    after = pids(supervisor)
    assert after["ledger"] != before["ledger"]
    assert {k: v for k, v in after.items() if k != "ledger"} == {
        k: v for k, v in before.items() if k != "ledger"
    }


def test_stale_pid_file_is_cleaned_with_a_note(isolated_env: dict[str, str]) -> None:
    sup = Supervisor(commands=standins())
    sup.layout.make()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sup.layout.pid_file("ledger").write_text(f"{dead.pid}\n")
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 0
    assert f"note: removed the stale PID file of ledger-gateway (pid {dead.pid} has exited)" in (
        result.stderr
    )
    assert "Nothing to stop" in result.stdout
    assert not sup.layout.pid_file("ledger").exists()


def test_down_never_kills_a_stranger(supervisor: Supervisor) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        supervisor.layout.make()
        supervisor.layout.pid_file("ledger").write_text(f"{stranger.pid}\n")
        results, notes = supervisor.down(timeout=2)
        assert results == []
        assert len(notes) == 1
        assert f"pid {stranger.pid}" in notes[0]
        assert "not ours, left alone" in notes[0]
        assert stranger.poll() is None
        assert not supervisor.layout.pid_file("ledger").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recorded_pid_reused_by_another_program_is_left_alone(supervisor: Supervisor) -> None:
    supervisor.up(timeout=20)
    state = json.loads(supervisor.layout.state_file.read_text())
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for entry in state["processes"]:
            if entry["name"] == "evaluator":
                real_pid, entry["pid"] = entry["pid"], stranger.pid
        supervisor.layout.state_file.write_text(json.dumps(state))
        results, notes = supervisor.down(timeout=5)
        assert "evaluator" not in {proc.name for proc, _ in results}
        assert any("not ours" in note for note in notes)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        os.kill(real_pid, signal.SIGTERM)


def test_busy_port_is_one_line_naming_the_variable(
    isolated_env: dict[str, str], supervisor: Supervisor
) -> None:
    port = int(isolated_env["P2E_LEDGER_PORT"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(StackError) as exc:
            supervisor.up(timeout=20)
        result = runner.invoke(app, ["up"])
    assert exc.value.message == (
        f"port {port} (ledger-gateway) is already in use by another program: "
        "stop it or set P2E_LEDGER_PORT to a free port"
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: {exc.value.message}\n"
    assert supervisor.load() == {}  # nothing was started


def test_busy_nats_port_names_p2e_nats_url(
    isolated_env: dict[str, str], supervisor: Supervisor
) -> None:
    _, port = endpoints.nats_host_port(isolated_env["P2E_NATS_URL"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(StackError, match="set P2E_NATS_URL"):
            supervisor.up(timeout=20)


def test_a_crash_during_start_up_shows_the_log_and_stops_the_rest(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_CRASH", "tool_runner")
    with pytest.raises(StackError) as exc:
        supervisor.up(timeout=20)
    assert exc.value.message.startswith(
        "tool-runner exited during start-up with exit code 3; last lines of "
    )
    assert "standin tool_runner: boom, cannot open the database" in exc.value.log_tail
    assert supervisor.load() == {}
    assert not list(supervisor.layout.run.glob("*.pid"))
    host, port = endpoints.nats_host_port(supervisor.nats_url)
    assert not socket_open(host, port)


def test_not_serving_in_time_is_an_error(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_SLOW", "evaluator")
    with pytest.raises(StackError, match=r"evaluator did not report SERVING within 2s"):
        supervisor.up(timeout=2)
    assert supervisor.load() == {}


def test_sigkill_after_the_timeout(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_IGNORE_TERM", "ledger")
    supervisor.up(timeout=20)
    ledger_pid = pids(supervisor)["ledger"]
    results, _ = supervisor.down(timeout=1)
    outcome = {proc.name: result for proc, result in results}
    assert outcome["ledger"] == "killed"
    assert outcome["artifacts"] == "stopped"
    assert not is_alive(ledger_pid)


def test_status_and_logs_commands(supervisor: Supervisor) -> None:
    supervisor.up(timeout=20)
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0
    rows = {row["service"]: row for row in json.loads(status.stdout)}
    assert rows["ledger-gateway"]["status"] == "SERVING"
    assert rows["nats-server"]["status"] == "running"
    assert rows["evaluator"]["pid"] == pids(supervisor)["evaluator"]
    logs = runner.invoke(app, ["logs", "ledger-gateway", "--lines", "1"])
    assert logs.exit_code == 0
    assert logs.stdout.startswith("standin ledger serving on ")
    every = runner.invoke(app, ["logs", "-n", "1"])
    assert "==> nats-server" in every.stdout
    assert "==> evaluator" in every.stdout
    unknown = runner.invoke(app, ["logs", "bogus"])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: unknown service 'bogus': one of nats-server, ")


def test_status_when_nothing_runs(isolated_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    assert {row["status"] for row in json.loads(result.stdout)} == {"down"}
    logs = runner.invoke(app, ["logs"])
    assert logs.exit_code == 1
    assert "no logs yet" in logs.stderr


def socket_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def test_logs_follow_prints_new_lines_until_ctrl_c(isolated_env: dict[str, str]) -> None:
    sup = Supervisor()
    sup.layout.make()
    log = sup.layout.log_file("ledger")
    log.write_text("old line\n")
    p2engine = Path(sys.executable).parent / "p2engine"
    follower = subprocess.Popen(
        [str(p2engine), "logs", "ledger", "--follow", "-n", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(20, follower.kill)  # a lost line fails the test, never hangs it
    watchdog.start()
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "old line\n"
        with log.open("a") as fh:
            fh.write("new line\n")
        assert follower.stdout.readline() == "new line\n"
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=10)
        watchdog.cancel()
    assert follower.returncode == 0
    assert "Traceback" not in err


def test_tail_at(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert tail_at(log, 3) == ([], 0)
    lines = [f"line {i}" for i in range(5000)]
    log.write_text("\n".join(lines) + "\n")
    last, end = tail_at(log, 3)
    assert last == lines[-3:]
    assert end == log.stat().st_size
    assert tail_at(log, 0) == ([], end)
    assert tail_at(log, 10_000)[0] == lines


def test_last_run_keeps_only_the_newest_start() -> None:
    lines = ["--- 1 p2engine up: a", "old", "--- 2 p2engine up: a", "new 1", "new 2"]
    assert last_run(lines) == ["new 1", "new 2"]
    assert last_run(["no marker"]) == ["no marker"]


def test_a_pid_file_without_a_record_must_name_the_service(isolated_env: dict[str, str]) -> None:
    sup = Supervisor()
    sup.layout.make()
    # A stranger whose command line merely mentions "ledger" is not the ledger-gateway.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "ledger", "ledger-gateway"]
    )
    try:
        sup.layout.pid_file("ledger").write_text(f"{stranger.pid}\n")
        result = runner.invoke(app, ["status"])
        assert result.exit_code == 0
        assert f"note: pid {stranger.pid} of ledger-gateway's PID file now runs" in result.stderr
        assert stranger.poll() is None
        assert not sup.layout.pid_file("ledger").exists()
    finally:
        stranger.kill()
        stranger.wait()
