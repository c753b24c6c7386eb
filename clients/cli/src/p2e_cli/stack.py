"""The local stack supervisor: nats-server and the five services as detached processes.

Everything lives under one data folder (P2E_DATA_DIR, default ./.p2engine):

    run/<name>.pid     one PID per process we started
    run/stack.json     what runs where: pid, argv, address, start time, log file
    logs/<name>.log    stdout+stderr of each process
    jetstream/         the NATS JetStream file store
    <service>.db       each service's SQLite file (the services put them there)

A PID is only ever signalled after /proc/<pid> proves it is still the process we started
(same command line and start time), so `down` never kills a stranger that reused the PID.
No typer and no Rich here: the commands in cmd_stack.py present what this module returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from p2e_cli import endpoints
from p2e_cli.endpoints import SERVICES, ServiceInfo
from p2e_cli.health import check_health
from p2e_cli.procs import (
    CHILDREN,
    Proc,
    describe_pid,
    is_alive,
    last_run,
    owns,
    proc_stat,
    tail,
    terminate,
)
from p2e_kit.natsd import port_open, start_nats_server

NATS = "nats"
NATS_LABEL = "nats-server"
GROUPS: tuple[tuple[str, ...], ...] = (
    ("artifacts", "ledger", "tool_runner"),
    ("orchestrator", "evaluator"),
)
LOG_TAIL_LINES = 15

Progress = Callable[[str], None]


class StackError(Exception):
    """A failure to report as one line (plus, for a crashed service, its last log lines)."""

    def __init__(self, message: str, log_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = list(log_tail)


@dataclass
class Row:
    """One line of `p2engine status`."""

    name: str
    label: str
    address: str
    pid: int | None
    health: str  # SERVING | NOT_SERVING | SERVICE_UNKNOWN | running | down


@dataclass
class UpResult:
    procs: list[Proc]
    started: list[str]
    notes: list[str]
    seconds: float

    @property
    def already_running(self) -> bool:
        return not self.started


class Layout:
    """Paths under the data folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.run = self.root / "run"
        self.logs = self.root / "logs"
        self.jetstream = self.root / "jetstream"
        self.state_file = self.run / "stack.json"

    def make(self) -> None:
        for folder in (self.run, self.logs, self.jetstream):
            folder.mkdir(parents=True, exist_ok=True)

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"


# --- the supervisor --------------------------------------------------------------------------


class Supervisor:
    """Starts, inspects and stops the stack recorded under one data folder.

    `commands` replaces the `python -m <package>` command of a service (tests use small
    stand-in servers); `nats_url`/`config_dir` default to the environment.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        config_dir: Path | None = None,
        nats_url: str | None = None,
        commands: Mapping[str, list[str]] | None = None,
        services: Sequence[ServiceInfo] = SERVICES,
    ) -> None:
        self.layout = Layout(data_dir or endpoints.data_dir())
        self.config_dir = (config_dir or endpoints.config_dir()).absolute()
        self.nats_url = nats_url or endpoints.nats_url()
        self.nats_host, self.nats_port = endpoints.nats_host_port(self.nats_url)
        self.commands = dict(commands or {})
        self.services = list(services)

    # state ------------------------------------------------------------------------------------

    @property
    def local_nats(self) -> bool:
        """False when P2E_NATS_URL points at a NATS we do not run (another host)."""
        return endpoints.is_loopback(self.nats_host)

    def address(self, name: str) -> str:
        if name == NATS:
            return f"{self.nats_host}:{self.nats_port}"
        return f"{endpoints.LOOPBACK}:{endpoints.listen_port(endpoints.BY_KEY[name])}"

    def label(self, name: str) -> str:
        return NATS_LABEL if name == NATS else endpoints.BY_KEY[name].name

    def names(self) -> list[str]:
        return ([NATS] if self.local_nats else []) + [s.key for s in self.services]

    def load(self) -> dict[str, Proc]:
        """Recorded processes: run/stack.json, plus PID files it does not mention."""
        procs: dict[str, Proc] = {}
        try:
            raw = json.loads(self.layout.state_file.read_text())
            for entry in raw.get("processes", []):
                procs[entry["name"]] = Proc(**entry)
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            pass
        for pid_file in sorted(self.layout.run.glob("*.pid")) if self.layout.run.is_dir() else []:
            name = pid_file.stem
            if name in procs or (name != NATS and name not in endpoints.BY_KEY):
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
            except (ValueError, IndexError, OSError):
                pid_file.unlink(missing_ok=True)
                continue
            procs[name] = Proc(name, self.label(name), pid, self.address(name))
        return procs

    def save(self, procs: Mapping[str, Proc]) -> None:
        self.layout.make()
        for name, proc in procs.items():
            self.layout.pid_file(name).write_text(f"{proc.pid}\n")
        if not procs:
            self.layout.state_file.unlink(missing_ok=True)
            return
        state = {
            "data_dir": str(self.layout.root),
            "nats_url": self.nats_url,
            "processes": [asdict(p) for p in procs.values()],
        }
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.layout.state_file)

    def forget(self, procs: dict[str, Proc], name: str) -> None:
        procs.pop(name, None)
        self.layout.pid_file(name).unlink(missing_ok=True)

    def running(self, notes: list[str] | None = None) -> dict[str, Proc]:
        """Recorded processes still running as recorded; stale records are removed (noted)."""
        procs = self.load()
        changed = False
        for name, proc in list(procs.items()):
            verdict = owns(proc)
            if verdict == "alive":
                continue
            if notes is not None:
                if verdict == "gone":
                    notes.append(
                        f"removed the stale PID file of {proc.label} (pid {proc.pid} has exited)"
                    )
                else:
                    notes.append(
                        f"pid {proc.pid} of {proc.label}'s PID file now runs "
                        f"'{describe_pid(proc.pid)}': not ours, left alone"
                    )
            self.forget(procs, name)
            changed = True
        if changed:
            self.save(procs)
        return procs

    # up ---------------------------------------------------------------------------------------

    def up(self, *, timeout: float = 30.0, progress: Progress | None = None) -> UpResult:
        """Start what is not running yet, in order, and wait until each service is SERVING.

        On any failure, stops what this call started and raises StackError."""
        report = progress or (lambda _message: None)
        began = time.monotonic()
        self.layout.make()
        notes: list[str] = []
        procs = self.running(notes)
        missing = [name for name in self.names() if name not in procs]
        if not missing:
            return UpResult(self.ordered(procs), [], notes, 0.0)
        self.check_ports(missing)
        started: list[str] = []
        deadline = began + timeout
        try:
            if NATS in missing:
                report("starting nats-server")
                procs[NATS] = self.start_nats()
                started.append(NATS)
                self.save(procs)
            for group in GROUPS:
                todo = [name for name in group if name in missing]
                for name in todo:
                    procs[name] = self.spawn(name)
                    started.append(name)
                    self.save(procs)
                self.wait_serving([procs[name] for name in todo], deadline, timeout, report)
        except (StackError, KeyboardInterrupt):
            report("stopping what was started")
            terminate([procs[name] for name in reversed(started)], timeout=5.0)
            for name in started:
                self.forget(procs, name)
            self.save(procs)
            raise
        return UpResult(self.ordered(procs), started, notes, time.monotonic() - began)

    def ordered(self, procs: Mapping[str, Proc]) -> list[Proc]:
        return [procs[name] for name in self.names() if name in procs]

    def port_env(self, name: str) -> str:
        return "P2E_NATS_URL" if name == NATS else endpoints.BY_KEY[name].port_env

    def check_ports(self, names: Sequence[str]) -> None:
        """Fail before starting anything when a port is taken or two services share one."""
        seen: dict[int, str] = {}
        for name in names:
            host, port = endpoints.split_address(self.address(name))
            label, env = self.label(name), self.port_env(name)
            if port in seen:
                raise StackError(
                    f"{label} and {seen[port]} are both set to port {port}: "
                    f"set {env} to another port"
                )
            seen[port] = label
            if port_open(host, port):
                raise StackError(
                    f"port {port} ({label}) is already in use by another program: "
                    f"stop it or set {env} to a free port"
                )

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            P2E_NATS_URL=self.nats_url,
            P2E_DATA_DIR=str(self.layout.root),
            P2E_CONFIG_DIR=str(self.config_dir),
            PYTHONUNBUFFERED="1",
        )
        for service in SERVICES:
            port = endpoints.listen_port(service)
            env[service.port_env] = str(port)
            env[service.addr_env] = f"{endpoints.LOOPBACK}:{port}"
        return env

    def start_nats(self) -> Proc:
        log = self.layout.log_file(NATS)
        try:
            server = start_nats_server(
                self.layout.jetstream,
                port=self.nats_port,
                host=self.nats_host,
                log_file=log,
                detach=True,
            )
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise StackError(
                f"nats-server did not start: {exc}", tail(log, LOG_TAIL_LINES)
            ) from None
        process = server.process
        CHILDREN[process.pid] = process
        argv = [str(arg) for arg in process.args]  # type: ignore[union-attr]
        return self.record(NATS, process.pid, argv, log)

    def spawn(self, name: str) -> Proc:
        """Start one service detached (own session), output appended to logs/<name>.log."""
        service = endpoints.BY_KEY[name]
        argv = self.commands.get(name) or [sys.executable, "-m", service.module]
        log = self.layout.log_file(name)
        with log.open("ab") as fh:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            fh.write(f"--- {stamp} p2engine up: {' '.join(argv)}\n".encode())
            fh.flush()
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.child_env(),
                start_new_session=True,
            )
        CHILDREN[child.pid] = child
        return self.record(name, child.pid, argv, log)

    def record(self, name: str, pid: int, argv: list[str], log: Path) -> Proc:
        stat = proc_stat(pid)
        return Proc(
            name,
            self.label(name),
            pid,
            self.address(name),
            argv=argv,
            start_ticks=stat[1] if stat else 0,
            log=str(log),
        )

    def wait_serving(
        self, procs: Sequence[Proc], deadline: float, timeout: float, report: Progress
    ) -> None:
        pending = {p.name: p for p in procs}
        while pending:
            for name, proc in list(pending.items()):
                if not is_alive(proc.pid):
                    raise StackError(
                        f"{proc.label} exited during start-up{_exit_code(proc.pid)}; "
                        f"last lines of {proc.log}:",
                        last_run(tail(Path(proc.log), LOG_TAIL_LINES)),
                    )
                if check_health(proc.address, timeout=1.0) == "SERVING":
                    del pending[name]
            if not pending:
                return
            labels = ", ".join(p.label for p in pending.values())
            if time.monotonic() > deadline:
                first = next(iter(pending.values()))
                raise StackError(
                    f"{labels} did not report SERVING within {timeout:g}s; "
                    f"last lines of {first.log}:",
                    last_run(tail(Path(first.log), LOG_TAIL_LINES)),
                )
            report(f"waiting for {labels}")
            time.sleep(0.05)

    # down / status ----------------------------------------------------------------------------

    def down(self, timeout: float = 10.0) -> tuple[list[tuple[Proc, str]], list[str]]:
        """Stop every process we started: services first, then nats-server.

        Returns ((proc, "stopped" | "killed") ..., notes)."""
        notes: list[str] = []
        procs = self.running(notes)
        services = [p for p in reversed(self.ordered(procs)) if p.name != NATS]
        services += [p for n, p in procs.items() if n not in self.names() and n != NATS]
        outcome = terminate(services, timeout)
        if NATS in procs:
            outcome.update(terminate([procs[NATS]], timeout))
        results = [(procs[name], result) for name, result in outcome.items()]
        for name in outcome:
            self.forget(procs, name)
        self.save(procs)
        return results, notes

    def status(self, notes: list[str] | None = None) -> list[Row]:
        """Health of every process; stale PID files are cleaned (noted in `notes`)."""
        procs = self.running(notes)
        rows: list[Row] = []
        for name in self.names():
            proc = procs.get(name)
            address = proc.address if proc else self.address(name)
            if name == NATS:
                host, port = endpoints.split_address(address)
                health = "running" if port_open(host, port) else "down"
            else:
                health = check_health(address, timeout=1.0)
            rows.append(Row(name, self.label(name), address, proc.pid if proc else None, health))
        return rows

    def log_names(self) -> list[str]:
        return [NATS] + [s.key for s in self.services]


def _exit_code(pid: int) -> str:
    child = CHILDREN.get(pid)
    if child is None or child.returncode is None:
        return ""
    return f" with exit code {child.returncode}"
