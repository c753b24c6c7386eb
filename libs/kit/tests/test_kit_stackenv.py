from __future__ import annotations

import socket
from pathlib import Path

from p2e_kit.natsd import free_ports
from p2e_kit.stackenv import SERVICE_ENV, isolated_stack_env


def test_free_ports_are_distinct_and_bindable() -> None:
    for _ in range(50):
        ports = free_ports(12)
        assert len(set(ports)) == 12
    for port in free_ports(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_isolated_stack_gives_every_service_its_own_port(tmp_path: Path) -> None:
    for _ in range(50):
        env = isolated_stack_env(tmp_path / "data", tmp_path / "config")
        ports = [env[f"{prefix}PORT"] for prefix, _ in SERVICE_ENV.values()]
        ports.append(env["P2E_NATS_URL"].rsplit(":", 1)[1])
        assert len(set(ports)) == len(SERVICE_ENV) + 1
        for prefix, addr in SERVICE_ENV.values():
            assert env[addr] == f"127.0.0.1:{env[f'{prefix}PORT']}"
