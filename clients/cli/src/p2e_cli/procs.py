"""Processes of the local stack: is a PID still the process we started, signal it, wait for
it, and read the tail of its log. Linux: identity comes from /proc/<pid>/{stat,cmdline}."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Popen objects of the processes this Python process started: kept so they are never
# garbage-collected while running (ResourceWarning) and so they can be reaped.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _reap_children() -> None:
    """Collect the exit status of children stopped by another process (`p2engine down` run
    elsewhere), so their Popen objects do not report them as still running."""
    for child in CHILDREN.values():
        child.poll()


@dataclass
class Proc:
    """One process of the stack, as recorded in run/stack.json."""

    name: str  # "nats" or a service key ("ledger")
    label: str  # "nats-server", "ledger-gateway"
    pid: int
    address: str
    argv: list[str] = field(default_factory=list)
    start_ticks: int = 0  # /proc/<pid>/stat field 22: distinguishes a reused PID
    log: str = ""


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of a process, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    child = CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    if Path("/proc").is_dir():
        stat = proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owns(proc: Proc) -> str:
    """Whether `proc` still runs as recorded ("alive"), has exited ("gone"), or its PID now
    belongs to another program ("stranger")."""
    if not is_alive(proc.pid):
        return "gone"
    if not Path("/proc").is_dir():
        return "alive"
    stat = proc_stat(proc.pid)
    cmdline = _cmdline(proc.pid)
    if stat is None or cmdline is None:
        return "gone"
    if proc.start_ticks and stat[1] != proc.start_ticks:
        return "stranger"
    if proc.argv and cmdline != proc.argv:
        return "stranger"
    if not proc.argv and not any(marker(proc) in part for part in cmdline):
        return "stranger"
    return "alive"


def marker(proc: Proc) -> str:
    """What the command line of a process recorded without its argv must contain."""
    from p2e_cli.endpoints import BY_KEY

    service = BY_KEY.get(proc.name)
    return service.module if service else "nats-server"


def describe_pid(pid: int) -> str:
    cmdline = _cmdline(pid)
    return " ".join(cmdline)[:80] if cmdline else "?"


def signal_proc(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_group(pid: int) -> None:
    """SIGKILL a process and, when it leads its own group (we start them so), its children."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    signal_proc(pid, signal.SIGKILL)


def terminate(procs: Sequence[Proc], timeout: float) -> dict[str, str]:
    """SIGTERM each, wait up to `timeout`, SIGKILL what is left. name -> "stopped" | "killed"."""
    outcome: dict[str, str] = {}
    for proc in procs:
        signal_proc(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    waiting = list(procs)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if is_alive(p.pid)]
        if waiting:
            time.sleep(0.05)
    for proc in procs:
        outcome[proc.name] = "killed" if proc in waiting else "stopped"
    for proc in waiting:
        kill_group(proc.pid)
    kill_deadline = time.monotonic() + 3.0
    while any(is_alive(p.pid) for p in waiting) and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    for proc in procs:
        child = CHILDREN.pop(proc.pid, None)
        if child is not None and child.poll() is None:
            child.wait(1)
    return outcome


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a text file ([] when missing)."""
    return tail_at(path, lines)[0]


def last_run(lines: list[str]) -> list[str]:
    """The lines after the newest "--- <time> p2engine up: ..." marker `spawn` writes."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("--- ") and " p2engine up: " in lines[index]:
            return lines[index + 1 :]
    return lines


def tail_at(path: Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of a file and the offset they end at (to follow from there)."""
    try:
        with path.open("rb") as fh:
            end = size = fh.seek(0, os.SEEK_END)
            data = b""
            chunk = 8192
            while lines > 0 and size > 0 and data.count(b"\n") <= lines:
                step = min(size, chunk)
                fh.seek(size - step)
                data = fh.read(step) + data
                size -= step
                chunk *= 2
    except FileNotFoundError:
        return [], 0
    text = data.decode(errors="replace").splitlines()
    return (text[-lines:] if lines > 0 else []), end
