"""Unit fixtures: the execution store on a temp SQLite file and an in-memory LedgerPort."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from p2e_kit import errors
from p2e_kit.db import create_engine
from p2e_tool_runner.ports import TransferView, WalletView
from p2e_tool_runner.store import ExecutionStore


@dataclass
class MemoryLedger:
    """A LedgerPort keeping balances in a dict; `down` makes every call unavailable."""

    balances: dict[str, Decimal] = field(
        default_factory=lambda: {"agent_alpha": Decimal("100.00"), "agent_beta": Decimal("50.00")}
    )
    transfers: list[TransferView] = field(default_factory=list)
    requests: list[dict[str, object]] = field(default_factory=list)
    next_status: str = "settled"
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise errors.DependencyUnavailable("ledger down", reason="DEPENDENCY_UNAVAILABLE")

    async def get_balance(self, *, caller_agent: str, agent_id: str) -> WalletView:
        self._check()
        self.requests.append({"op": "balance", "caller": caller_agent, "agent_id": agent_id})
        if agent_id not in self.balances:
            raise errors.NotFound(f"no wallet {agent_id}")
        return WalletView(agent_id, f"{self.balances[agent_id]:.2f}", "P2E")

    async def create_transfer(self, **kwargs: str) -> TransferView:
        self._check()
        self.requests.append({"op": "transfer", **kwargs})
        amount = Decimal(kwargs["amount"])
        payer, payee = kwargs["caller_agent"], kwargs["to_agent"]
        status = self.next_status
        if status == "settled":
            if self.balances[payer] < amount:
                raise errors.FailedPrecondition("not enough", reason="INSUFFICIENT_FUNDS")
            self.balances[payer] -= amount
            self.balances[payee] = self.balances.get(payee, Decimal(0)) + amount
        view = TransferView(
            id=f"tr_{len(self.transfers) + 1}",
            from_agent=payer,
            to_agent=payee,
            amount=f"{amount:.2f}",
            asset="P2E",
            status=status,
            reason=kwargs["reason"],
            failure_reason="WALLET_FROZEN" if status == "failed" else "",
            request_id=kwargs["request_id"],
        )
        self.transfers.append(view)
        return view

    async def list_transactions(
        self, *, caller_agent: str, agent_id: str, limit: int
    ) -> list[TransferView]:
        self._check()
        mine = [t for t in reversed(self.transfers) if agent_id in (t.from_agent, t.to_agent)]
        return mine[:limit]


@pytest.fixture
def memory_ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[ExecutionStore]:
    engine = create_engine(sqlite_url)
    execution_store = ExecutionStore(engine)
    await execution_store.create_tables()
    try:
        yield execution_store
    finally:
        await engine.dispose()
