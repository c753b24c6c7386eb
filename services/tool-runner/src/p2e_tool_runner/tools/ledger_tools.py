"""Wallet tools: check_balance, transfer_funds, transaction_history.

Every call runs as the runtime's agent (`ctx.agent_id`): the payer of a transfer is always
the calling agent, and the ledger idempotency key is the call id, so a redelivered call
never pays twice. Arguments cannot name another payer (`extra="forbid"`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from p2e_kit.errors import FailedPrecondition
from p2e_tool_runner.ports import TransferView
from p2e_tool_runner.sdk import ToolContext, function_tool


class CheckBalanceArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransferArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    to_agent: str = Field(min_length=1, max_length=200, description="The agent to pay.")
    amount: Decimal = Field(gt=0, description='Amount to send, e.g. 25 or "25.50".')
    reason: str = Field(default="", max_length=500, description="Why (kept in the history).")


class HistoryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=10, ge=1, le=100, description="How many transfers, newest first.")


def decimal_text(value: Decimal) -> str:
    """A plain decimal string (no exponent): Decimal("2.5E+1") -> "25"."""
    return format(value, "f")


@function_tool(
    name="check_balance",
    description="Check your own wallet balance.",
    input_schema=CheckBalanceArgs,
    side_effect_free=True,
    requires_agent=True,
)
async def check_balance(ctx: ToolContext, args: CheckBalanceArgs) -> dict[str, Any]:
    wallet = await ctx.ledger_port().get_balance(caller_agent=ctx.agent_id, agent_id=ctx.agent_id)
    return {"agent_id": wallet.agent_id, "balance": wallet.balance, "asset": wallet.asset}


@function_tool(
    name="transfer_funds",
    description="Send money from your own wallet to another agent.",
    input_schema=TransferArgs,
    dedup_policy="penalty",
    requires_agent=True,
)
async def transfer_funds(ctx: ToolContext, args: TransferArgs) -> dict[str, Any]:
    transfer = await ctx.ledger_port().create_transfer(
        caller_agent=ctx.agent_id,
        to_agent=args.to_agent,
        amount=decimal_text(args.amount),
        reason=args.reason,
        request_id=ctx.call_id,
        conversation_id=ctx.conversation_id,
    )
    if transfer.status in ("failed", "rejected"):
        code = transfer.failure_reason or f"TRANSFER_{transfer.status.upper()}"
        raise FailedPrecondition(
            f"transfer of {transfer.amount} {transfer.asset} to {transfer.to_agent} "
            f"{transfer.status}: {code}",
            reason=code,
        )
    return _transfer_result(transfer)


def _transfer_result(transfer: TransferView) -> dict[str, Any]:
    result: dict[str, Any] = {
        "transfer_id": transfer.id,
        "status": transfer.status,
        "from_agent": transfer.from_agent,
        "to_agent": transfer.to_agent,
        "amount": transfer.amount,
        "asset": transfer.asset,
        "reason": transfer.reason,
    }
    if transfer.balance_after:
        result["balance_after"] = transfer.balance_after
    if transfer.status == "pending_approval":
        result["note"] = "above the approval threshold: waiting for an operator"
    if transfer.replayed:
        result["replayed"] = True
    return result


@function_tool(
    name="transaction_history",
    description="List your recent transfers, sent and received, newest first.",
    input_schema=HistoryArgs,
    side_effect_free=True,
    requires_agent=True,
)
async def transaction_history(ctx: ToolContext, args: HistoryArgs) -> dict[str, Any]:
    transfers = await ctx.ledger_port().list_transactions(
        caller_agent=ctx.agent_id, agent_id=ctx.agent_id, limit=args.limit
    )
    rows = [_history_row(ctx.agent_id, t) for t in transfers[: args.limit]]
    return {"agent_id": ctx.agent_id, "count": len(rows), "transactions": rows}


def _history_row(agent_id: str, transfer: TransferView) -> dict[str, Any]:
    sent = transfer.from_agent == agent_id
    return {
        "transfer_id": transfer.id,
        "direction": "sent" if sent else "received",
        "counterparty": transfer.to_agent if sent else transfer.from_agent,
        "from_agent": transfer.from_agent,
        "to_agent": transfer.to_agent,
        "amount": transfer.amount,
        "asset": transfer.asset,
        "reason": transfer.reason,
        "status": transfer.status,
        "time": transfer.create_time,
    }
