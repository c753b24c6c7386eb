"""What tools need from the outside, as plain Python interfaces (no grpc here).

The tool-runner talks to the ledger through `LedgerPort`; `ledger_client.GrpcLedger` is the
gRPC adapter, and tests use an in-memory implementation of the same interface.
Every method runs *as* `caller_agent` (the runtime's agent), never as an id from arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class WalletView:
    """A wallet as a tool reports it."""

    agent_id: str
    balance: str
    asset: str
    frozen: bool = False


@dataclass(frozen=True)
class TransferView:
    """A transfer as a tool reports it; `status` is "settled", "failed", "pending_approval"
    or "rejected"."""

    id: str
    from_agent: str
    to_agent: str
    amount: str
    asset: str
    status: str
    reason: str = ""
    failure_reason: str = ""
    request_id: str = ""
    create_time: str = ""
    replayed: bool = False
    balance_after: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LedgerPort(Protocol):
    """The ledger operations tools use. Errors are kit `P2EError`s whose `reason` is the
    ledger's machine-readable cause (INSUFFICIENT_FUNDS, NOT_FOUND, ...); an unreachable
    ledger is `DependencyUnavailable`."""

    async def get_balance(self, *, caller_agent: str, agent_id: str) -> WalletView: ...

    async def create_transfer(
        self,
        *,
        caller_agent: str,
        to_agent: str,
        amount: str,
        reason: str,
        request_id: str,
        conversation_id: str,
    ) -> TransferView: ...

    async def list_transactions(
        self, *, caller_agent: str, agent_id: str, limit: int
    ) -> list[TransferView]: ...
