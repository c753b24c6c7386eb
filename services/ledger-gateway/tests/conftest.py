"""Fixtures of the ledger-gateway tests: a config dir, and the service on a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from p2e_kit.channels import caller_metadata, open_channel
from p2e_kit.errors import ErrorDetails
from p2e_kit.service import grpc_serving
from p2e_kit.status import decode
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.server import LedgerApp, running_app
from p2engine.ledger.v1 import ledger_service_pb2 as pb
from p2engine.ledger.v1 import ledger_service_pb2_grpc

AGENTS = ["alice", "bob", "carol", "kid", "boss"]
POLICIES = {
    "kid": {"max_per_transfer": 50, "daily_cap": 120, "allowed_recipients": ["alice", "bob"]},
    "boss": {"approval_threshold": 200},
}

OPERATOR = caller_metadata("operator", "ops")


def agent(agent_id: str) -> tuple[tuple[str, str], ...]:
    return caller_metadata("agent", agent_id)


@pytest.fixture
def ledger_config_dir(tmp_path: Path) -> Path:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    ledger = {"initial_balance": 100.0, "asset": "P2E", "scale": 2, "policies": POLICIES}
    (config_dir / "config.json").write_text(json.dumps({"ledger": ledger}))
    lines = ["agents:"] + [f"  - id: {a}" for a in AGENTS]
    (config_dir / "agents.yml").write_text("\n".join(lines) + "\n")
    return config_dir


@pytest.fixture
def make_settings(ledger_config_dir: Path, tmp_path: Path) -> Callable[..., Settings]:
    def make(database_url: str = "", **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "config_dir": ledger_config_dir,
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "publish_events": False,
            # One process per test: the transfer writer's child (a few seconds of imports)
            # is tested in rpc/test_ledger_writer_process.py, the concurrency tests and the
            # kill -9 test (the real `python -m p2e_ledger_gateway`, default settings).
            "transfer_writer": "inline",
            "outbox_poll_seconds": 0.2,
            "outbox_retry_min_seconds": 0.05,
            "outbox_retry_max_seconds": 0.3,
        }
        values.update(overrides)
        return Settings(**values)

    return make


class Harness:
    """A served ledger: `stub`, `app`, and helpers that keep the tests short."""

    operator = OPERATOR
    agent = staticmethod(agent)

    def __init__(
        self, app: LedgerApp, stub: ledger_service_pb2_grpc.LedgerServiceStub, address: str
    ) -> None:
        self.app = app
        self.stub = stub
        self.address = address
        self._n = 0

    def request_id(self) -> str:
        self._n += 1
        return f"req-{self._n}"

    async def init(self, *agents: str, balance: str = "") -> pb.InitWalletsResponse:
        request = pb.InitWalletsRequest(agent_ids=list(agents), initial_balance=balance)
        return await self.stub.InitWallets(request, metadata=OPERATOR)

    async def pay(
        self, payer: str, to: str, amount: str, request_id: str = "", **fields: str
    ) -> Any:
        request = pb.CreateTransferRequest(
            to_agent=to, amount=amount, request_id=request_id or self.request_id(), **fields
        )
        return await self.stub.CreateTransfer(request, metadata=agent(payer))

    async def balance(self, agent_id: str) -> str:
        wallet = await self.stub.GetBalance(pb.GetBalanceRequest(agent_id=agent_id))
        return wallet.balance.amount

    @staticmethod
    async def error(call: Awaitable[Any]) -> ErrorDetails:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        return decode(caught.value)


@asynccontextmanager
async def serving(settings: Settings, **build: Any) -> AsyncIterator[Harness]:
    """The ledger on a real socket; `build` goes to `build_app` (e.g. `canton_transport`)."""
    async with (
        running_app(settings, **build) as app,
        grpc_serving(app.registrations, address="127.0.0.1:0") as (port, _server, _health),
    ):
        address = f"127.0.0.1:{port}"
        channel = open_channel(address)
        try:
            yield Harness(app, ledger_service_pb2_grpc.LedgerServiceStub(channel), address)
        finally:
            await channel.close()


@pytest.fixture
async def ledger(make_settings: Callable[..., Settings], sqlite_url: str) -> AsyncIterator[Harness]:
    """The ledger on SQLite with the five test agents' wallets (100.00 each)."""
    async with serving(make_settings(sqlite_url)) as harness:
        await harness.init(*AGENTS)
        yield harness


@pytest.fixture
def serve_ledger() -> Callable[[Settings], Any]:
    """`async with serve_ledger(settings, **build) as harness:` the ledger on a real socket."""
    return serving
