"""Wallet lifecycle inside a write transaction: creation (with its mint) and freezing.

The wallets themselves are made and changed by the `MoneyBackend`; the mints and the audit
entries are the gateway's, whatever the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_ledger_gateway import audit
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import WalletRecord
from p2e_ledger_gateway.store import mints, now_us
from p2e_ledger_gateway.transfers import lock_wallets, require_wallet

if TYPE_CHECKING:
    from p2e_ledger_gateway.money_backend import MoneyBackend


async def create_missing(
    conn: AsyncConnection,
    money: MoneyBackend,
    agent_ids: list[str],
    balance: int,
    actor: str,
    request_id: str,
    currency: Currency,
) -> tuple[list[WalletRecord], list[str]]:
    """Create the wallets that do not exist yet, each minting `balance`.

    Returns every named wallet (in the order named) and the ids created.
    """
    # Lock the existing wallets before the chain head, like every other writer (no deadlock).
    existing = await money.wallets(conn, agent_ids, await lock_wallets(conn, agent_ids))
    missing = set(agent_ids) - set(existing)
    created = await money.create(conn, sorted(missing), balance) if missing else []
    if created:
        now = now_us()
        await conn.execute(
            insert(mints),
            [
                {"agent_id": a, "amount": balance, "actor": actor, "create_time": now}
                for a in created
            ],
        )
        payload = {
            "initial_balance": currency.format(balance),
            "asset": currency.asset,
            "request_id": request_id,
        }
        entries = [
            {"event_type": "wallet_created", "actor": actor, "agent_id": a, "payload": payload}
            for a in created
        ]
        await audit.append(conn, entries)
    # All rows held by now: no wait.
    found = await money.wallets(conn, agent_ids, await lock_wallets(conn, agent_ids))
    created_in_order = [a for a in agent_ids if a in set(created)]
    return [require_wallet(found, a) for a in agent_ids], created_in_order


async def set_frozen(
    conn: AsyncConnection,
    money: MoneyBackend,
    agent_id: str,
    frozen: bool,
    actor: str,
    reason: str,
    request_id: str,
) -> WalletRecord:
    """Freeze or unfreeze; an unchanged wallet is returned as is, without an audit entry."""
    found = await money.wallets(conn, [agent_id], await lock_wallets(conn, [agent_id]))
    current = require_wallet(found, agent_id)
    if current.frozen == frozen:
        return current
    changed = await money.set_frozen(conn, current, frozen)
    await audit.append(
        conn,
        [
            {
                "event_type": "wallet_frozen" if frozen else "wallet_unfrozen",
                "actor": actor,
                "agent_id": agent_id,
                "payload": {"reason": reason, "request_id": request_id},
            }
        ],
    )
    return changed
