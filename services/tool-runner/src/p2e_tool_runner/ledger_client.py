"""`LedgerPort` over gRPC: LedgerService calls made as `agent:<caller_agent>`.

A refused call becomes a kit P2EError carrying the ledger's ErrorInfo reason
(INSUFFICIENT_FUNDS, NOT_FOUND, ...); an unreachable or silent ledger becomes
DependencyUnavailable with reason DEPENDENCY_UNAVAILABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from p2e_kit import errors
from p2e_kit.channels import CONVERSATION_KEY, caller_metadata
from p2e_kit.status import decode
from p2e_tool_runner.ports import TransferView, WalletView
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc

log = logging.getLogger(__name__)

_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
_BY_CODE: dict[str, type[errors.P2EError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.Conflict,
        errors.PermissionDenied,
        errors.QuotaExceeded,
        errors.Unimplemented,
    )
}


def ledger_error(error: grpc.RpcError, address: str = "") -> errors.P2EError:
    """The domain error of a failed ledger call."""
    details = decode(error)
    if details.code in _UNREACHABLE:
        where = f" at {address}" if address else ""
        return errors.DependencyUnavailable(
            f"the ledger{where} is unavailable ({details.code}: {details.message})",
            reason="DEPENDENCY_UNAVAILABLE",
        )
    cls = _BY_CODE.get(details.code, errors.P2EError)
    message = details.message or f"the ledger answered {details.code}"
    return cls(message, reason=details.reason or details.code, metadata=details.metadata)


def transfer_view(transfer: ledger_pb2.Transfer) -> TransferView:
    status = ledger_pb2.TransferStatus.Name(transfer.status).removeprefix("TRANSFER_STATUS_")
    return TransferView(
        id=transfer.id,
        from_agent=transfer.from_agent,
        to_agent=transfer.to_agent,
        amount=transfer.amount.amount,
        asset=transfer.amount.asset,
        status=status.lower(),
        reason=transfer.reason,
        failure_reason=transfer.failure_reason,
        request_id=transfer.request_id,
        create_time=(
            transfer.create_time.ToJsonString() if transfer.HasField("create_time") else ""
        ),
        replayed=transfer.replayed,
        balance_after=transfer.from_balance_after.amount,
    )


class GrpcLedger:
    """The ledger-gateway as a `LedgerPort`."""

    def __init__(
        self, channel: grpc.aio.Channel, *, address: str = "", deadline_seconds: float = 10.0
    ) -> None:
        self._stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        self._address = address
        self._deadline = deadline_seconds

    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        request: Any,
        *,
        caller_agent: str,
        conversation_id: str = "",
    ) -> Any:
        metadata = caller_metadata("agent", caller_agent)
        if conversation_id:
            metadata += ((CONVERSATION_KEY, conversation_id),)
        try:
            return await method(request, metadata=metadata, timeout=self._deadline)
        except grpc.RpcError as exc:
            raise ledger_error(exc, self._address) from None

    async def get_balance(self, *, caller_agent: str, agent_id: str) -> WalletView:
        wallet = await self._call(
            self._stub.GetBalance,
            ledger_service_pb2.GetBalanceRequest(agent_id=agent_id),
            caller_agent=caller_agent,
        )
        return WalletView(
            agent_id=wallet.agent_id,
            balance=wallet.balance.amount,
            asset=wallet.balance.asset,
            frozen=wallet.frozen,
        )

    async def create_transfer(
        self,
        *,
        caller_agent: str,
        to_agent: str,
        amount: str,
        reason: str,
        request_id: str,
        conversation_id: str,
    ) -> TransferView:
        request = ledger_service_pb2.CreateTransferRequest(
            from_agent=caller_agent,
            to_agent=to_agent,
            amount=amount,
            reason=reason,
            request_id=request_id,
        )
        transfer = await self._call(
            self._stub.CreateTransfer,
            request,
            caller_agent=caller_agent,
            conversation_id=conversation_id,
        )
        return transfer_view(transfer)

    async def list_transactions(
        self, *, caller_agent: str, agent_id: str, limit: int
    ) -> list[TransferView]:
        response = await self._call(
            self._stub.ListTransactions,
            ledger_service_pb2.ListTransactionsRequest(agent_id=agent_id, page_size=limit),
            caller_agent=caller_agent,
        )
        return [transfer_view(t) for t in response.transfers]
