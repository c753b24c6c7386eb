"""One service as a real child process (`python -m <package>`), ready when its gRPC health
check says SERVING: for fault tests and benchmarks that kill, restart or load a service."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

READY_TIMEOUT_SECONDS = 30.0


class ServiceProcess:
    """`python -m module` with `env`, output appended to `log`, serving on `address`."""

    def __init__(self, module: str, address: str, env: dict[str, str], log: Path) -> None:
        self.module = module
        self.address = address
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process and wait until it serves; raises RuntimeError with its log."""
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_SECONDS
            while asyncio.get_running_loop().time() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.module} exited:\n{self.log.read_text()}")
                try:
                    reply = await health.Check(  # pyright: ignore[reportAttributeAccessIssue]
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        await self.kill()
        raise RuntimeError(f"{self.module} not serving after {READY_TIMEOUT_SECONDS:.0f} s")

    async def kill(self) -> None:
        """SIGKILL: the crash a fault test wants."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), grace_seconds)
        except TimeoutError:
            await self.kill()
