"""Wallet lifecycle inside a write transaction: creation (with its mint) and freezing."""

from __future__ import annotations

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import NotFound
from p2e_ledger_gateway import audit
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import WalletRecord
from p2e_ledger_gateway.store import mints, now_us, wallets
from p2e_ledger_gateway.transfers import lock_wallets


async def create_missing(
    conn: AsyncConnection,
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
    existing = await lock_wallets(conn, agent_ids)
    created = sorted(set(agent_ids) - set(existing))  # a fixed insert order: no deadlock on twins
    if created:
        now = now_us()
        await conn.execute(
            insert(wallets),
            [
                {
                    "agent_id": agent,
                    "balance": balance,
                    "frozen": False,
                    "sent_count": 0,
                    "received_count": 0,
                    "create_time": now,
                    "last_activity_time": None,
                }
                for agent in created
            ],
        )
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
    found = await lock_wallets(conn, agent_ids)  # all held by now: no wait
    created_in_order = [a for a in agent_ids if a in set(created)]
    return [found[a] for a in agent_ids], created_in_order


async def set_frozen(
    conn: AsyncConnection,
    agent_id: str,
    frozen: bool,
    actor: str,
    reason: str,
    request_id: str,
) -> WalletRecord:
    """Freeze or unfreeze; an unchanged wallet is returned as is, without an audit entry."""
    found = await lock_wallets(conn, [agent_id])
    if agent_id not in found:
        raise NotFound(f"no wallet for agent {agent_id!r}", reason="WALLET_NOT_FOUND")
    current = found[agent_id]
    if current.frozen == frozen:
        return current
    await conn.execute(update(wallets).where(wallets.c.agent_id == agent_id).values(frozen=frozen))
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
    return (await lock_wallets(conn, [agent_id]))[agent_id]
