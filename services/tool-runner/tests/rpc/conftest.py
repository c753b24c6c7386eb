"""RPC fixtures: a small but real LedgerService over gRPC, and the tool-runner on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import grpc
import pytest

from p2e_kit import errors
from p2e_kit.channels import open_channel, parse_caller
from p2e_kit.grpc_server import Registration
from p2e_kit.service import grpc_serving
from p2e_tool_runner.config import Settings
from p2e_tool_runner.ledger_client import GrpcLedger
from p2e_tool_runner.server import Runtime, build_runtime, registrations
from p2engine.common.v1 import common_pb2
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc
from p2engine.tools.v1 import tools_service_pb2_grpc

ASSET = "P2E"
START_BALANCES = {"agent_alpha": "100.00", "agent_beta": "50.00", "treasurer": "1000.00"}


@dataclass
class SeenCall:
    method: str
    caller: str
    conversation: str


def _money(value: Decimal) -> common_pb2.Money:
    return common_pb2.Money(amount=f"{value:.2f}", asset=ASSET)


@dataclass
class FakeLedger(ledger_service_pb2_grpc.LedgerServiceServicer):
    """Balances in a dict; honours p2e-caller (an agent debits only itself) and request_id."""

    balances: dict[str, Decimal] = field(
        default_factory=lambda: {k: Decimal(v) for k, v in START_BALANCES.items()}
    )
    transfers: list[ledger_pb2.Transfer] = field(default_factory=list)
    by_request: dict[tuple[str, str], ledger_pb2.Transfer] = field(default_factory=dict)
    seen: list[SeenCall] = field(default_factory=list)

    def _see(self, method: str, context: grpc.aio.ServicerContext) -> str:
        caller = parse_caller(context.invocation_metadata())
        meta = dict(context.invocation_metadata() or ())
        self.seen.append(SeenCall(method, str(caller), str(meta.get("p2e-conversation", ""))))
        if not caller.is_agent:
            raise errors.PermissionDenied(f"{method} needs an agent caller, got {caller}")
        return caller.id

    def _wallet(self, agent_id: str) -> Decimal:
        if agent_id not in self.balances:
            raise errors.NotFound(f"no wallet for {agent_id}", reason="WALLET_NOT_FOUND")
        return self.balances[agent_id]

    async def GetBalance(self, request, context):  # type: ignore[override]
        caller = self._see("GetBalance", context)
        if caller != request.agent_id:
            raise errors.PermissionDenied("an agent may only read its own wallet")
        balance = self._wallet(request.agent_id)
        return ledger_pb2.Wallet(agent_id=request.agent_id, balance=_money(balance))

    async def CreateTransfer(self, request, context):  # type: ignore[override]
        caller = self._see("CreateTransfer", context)
        payer = request.from_agent or caller
        if payer != caller:
            raise errors.PermissionDenied(f"{caller} may not debit {payer}")
        previous = self.by_request.get((payer, request.request_id))
        if previous is not None:
            replay = ledger_pb2.Transfer()
            replay.CopyFrom(previous)
            replay.replayed = True
            return replay
        amount = self._amount(request.amount)
        if request.to_agent == payer:
            raise errors.InvalidArgument("cannot pay yourself", reason="SELF_TRANSFER")
        have, _ = self._wallet(payer), self._wallet(request.to_agent)
        transfer = ledger_pb2.Transfer(
            id=f"tr_{len(self.by_request) + 1}",
            request_id=request.request_id,
            from_agent=payer,
            to_agent=request.to_agent,
            amount=_money(amount),
            reason=request.reason,
            initiated_by=f"agent:{caller}",
        )
        if have < amount:  # like the real ledger: a refusal is a recorded FAILED transfer
            transfer.status = ledger_pb2.TRANSFER_STATUS_FAILED
            transfer.failure_reason = "INSUFFICIENT_FUNDS"
        else:
            self.balances[payer] -= amount
            self.balances[request.to_agent] += amount
            transfer.status = ledger_pb2.TRANSFER_STATUS_SETTLED
            transfer.from_balance_after.CopyFrom(_money(self.balances[payer]))
            self.transfers.append(transfer)
        self.by_request[(payer, request.request_id)] = transfer
        return transfer

    @staticmethod
    def _amount(text: str) -> Decimal:
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise errors.InvalidArgument(f"bad amount {text!r}", field="amount") from None
        if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
            raise errors.InvalidArgument(f"bad amount {text!r}", field="amount")
        return amount

    async def ListTransactions(self, request, context):  # type: ignore[override]
        caller = self._see("ListTransactions", context)
        if caller != request.agent_id:
            raise errors.PermissionDenied("an agent may only read its own history")
        self._wallet(request.agent_id)
        mine = [
            t for t in reversed(self.transfers) if request.agent_id in (t.from_agent, t.to_agent)
        ]
        return ledger_service_pb2.ListTransactionsResponse(
            transfers=mine[: request.page_size or 20]
        )

    def callers(self, method: str) -> set[str]:
        return {c.caller for c in self.seen if c.method == method}


LEDGER_SERVICE = "p2engine.ledger.v1.LedgerService"


@pytest.fixture
async def ledger() -> AsyncIterator[tuple[FakeLedger, str]]:
    fake = FakeLedger()
    reg = Registration(
        ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server, fake, LEDGER_SERVICE
    )
    async with grpc_serving([reg], address="127.0.0.1:0") as (port, _server, _health):
        yield fake, f"127.0.0.1:{port}"


@pytest.fixture
def fake_ledger(ledger: tuple[FakeLedger, str]) -> FakeLedger:
    return ledger[0]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Tool-runner settings with a SQLite file in a temp dir."""
    return Settings(data_dir=tmp_path / "data", database_url="", port=0)


@pytest.fixture
async def runtime(settings: Settings, ledger: tuple[FakeLedger, str]) -> AsyncIterator[Runtime]:
    """The tool-runner's domain objects with a real gRPC ledger client, no bus."""
    channel = open_channel(ledger[1])
    built = await build_runtime(settings, ledger=GrpcLedger(channel, address=ledger[1]), bus=None)
    try:
        yield built
    finally:
        await built.close()
        await channel.close()


@pytest.fixture
async def tools(runtime: Runtime) -> AsyncIterator[tools_service_pb2_grpc.ToolServiceStub]:
    """A ToolService client of the tool-runner served on a real 127.0.0.1 port."""
    async with grpc_serving(registrations(runtime), address="127.0.0.1:0") as (port, _s, _h):
        channel = open_channel(f"127.0.0.1:{port}")
        try:
            yield tools_service_pb2_grpc.ToolServiceStub(channel)
        finally:
            await channel.close()
