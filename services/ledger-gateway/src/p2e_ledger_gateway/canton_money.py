"""`CantonMoney`: the ledger's `MoneyBackend` on a Canton participant (`ledger.backend: canton`).

Balances, freezes and the transfers themselves are `Wallet` / `TransferRecord` contracts,
reached through `CantonLedgerBackend` (canton/). The gateway's database keeps what Canton
does not: the recorded outcome of every request (FAILED and PENDING_APPROVAL ones too),
policies and approvals, the audit chain, the outbox, the mints and one registry row per
wallet in `ledger_wallets` (the foreign-key target of transfers and mints, locked while a
transfer of that wallet is decided; its balance columns stay at zero).

A move is `CantonLedgerBackend.transfer` with the payer's request_id: its command id is
derived from (payer, request_id), so a retry after a lost answer or after a failure of the
gateway's own transaction is deduplicated by Canton and answered from the recorded
`TransferRecord` (the audit entry then says `canton_replayed`); where no retry comes, the
gateway's reconciliation records it the same way (`settlements`, `Ledger.reconcile`). The
two Daml refusals that are a payer's business (INSUFFICIENT_FUNDS, WALLET_FROZEN: the wallet
changed since the gateway read it) are recorded like the gateway's own; any other error, an
unreachable participant above all, leaves no record, and the caller's retry goes to Canton
again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import FailedPrecondition, InvalidArgument, P2EError
from p2e_ledger_gateway import queries
from p2e_ledger_gateway.book import Book
from p2e_ledger_gateway.canton.backend import CantonLedgerBackend
from p2e_ledger_gateway.canton.contracts import DAML_SCALE, WalletContract
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.money_backend import Moved, Settlement
from p2e_ledger_gateway.policy import Refusal
from p2e_ledger_gateway.records import TransferRecord, WalletRecord
from p2e_ledger_gateway.store import now_us, wallets
from p2e_ledger_gateway.transfers import lock_wallets

log = logging.getLogger(__name__)

# Daml refusals of a transfer that are the payer's business: recorded as FAILED outcomes.
LEDGER_REFUSALS = frozenset({"INSUFFICIENT_FUNDS", "WALLET_FROZEN"})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CantonMoney:
    """Wallets and moves on Canton; implements `money_backend.MoneyBackend`."""

    name = "canton"

    def __init__(self, backend: CantonLedgerBackend, currency: Currency) -> None:
        check_currency(currency)
        self.backend = backend
        self.currency = currency

    @property
    def endpoint(self) -> str:
        return self.backend.endpoint

    async def wallets(
        self, conn: AsyncConnection, agent_ids: Sequence[str], locked: dict[str, WalletRecord]
    ) -> dict[str, WalletRecord]:
        on_ledger = await self._on_ledger()
        known = [a for a in dict.fromkeys(agent_ids) if a in on_ledger]
        created = {a: w.create_time for a, w in locked.items()}
        unknown = [a for a in known if a not in locked]
        if unknown:
            log.warning("canton wallets without a gateway row, registering: %s", unknown)
            created |= await register(conn, unknown)
        return {a: self._record(on_ledger[a], created[a]) for a in known}

    async def wallet(self, conn: AsyncConnection, agent_id: str) -> WalletRecord | None:
        found = (await self._on_ledger()).get(agent_id)
        if found is None:
            return None
        row = await queries.wallet(conn, agent_id)
        return self._record(found, row.create_time if row else None)

    async def all_wallets(self, conn: AsyncConnection) -> list[WalletRecord]:
        created = {w.agent_id: w.create_time for w in await queries.all_wallets(conn)}
        on_ledger = await self.backend.list_wallets()
        return [self._record(w, created.get(w.agent_id)) for w in on_ledger]

    async def create(
        self, conn: AsyncConnection, agent_ids: Sequence[str], balance: int
    ) -> list[str]:
        result = await self.backend.init_wallets(agent_ids, self._decimal(balance))
        registered = await lock_wallets(conn, agent_ids)
        on_ledger = {w.agent_id for w in result.wallets}
        await register(conn, [a for a in agent_ids if a in on_ledger and a not in registered])
        return sorted(result.created_agent_ids)

    async def move(
        self, conn: AsyncConnection, record: TransferRecord, book: Book
    ) -> Moved | Refusal:
        moved = await self._submit(record)
        if isinstance(moved, Moved):
            book.move(record, moved.balance_after, now_us())
        return moved

    async def write_moves(self, conn: AsyncConnection, book: Book) -> None:
        """Nothing: each move was a Canton transaction of its own."""

    async def _submit(self, record: TransferRecord) -> Moved | Refusal:
        amount = self._decimal(record.amount)
        try:
            settled = await self.backend.transfer(
                record.from_agent, record.to_agent, amount, record.reason, record.request_id
            )
        except FailedPrecondition as err:
            if err.reason not in LEDGER_REFUSALS:
                raise
            log.info("canton refused transfer %s: %s", record.id, err.reason)
            return Refusal(err.reason, err.message)
        evidence = {"canton_command_id": settled.id}
        if settled.update_id:
            evidence["canton_update_id"] = settled.update_id
        if settled.replayed:  # committed by an earlier attempt the gateway did not record
            log.warning("transfer %s was already on Canton (%s)", record.id, settled.id)
            evidence["canton_replayed"] = "true"
        after = self._minor(settled.from_balance_after, f"the balance of {record.from_agent}")
        return Moved(after, evidence)

    async def already_moved(self, conn: AsyncConnection, record: TransferRecord) -> Moved | None:
        if await self.backend.find_transfer(record.from_agent, record.request_id) is None:
            return None
        moved = await self._submit(record)  # a replay: compares the parameters, moves nothing
        return moved if isinstance(moved, Moved) else None

    async def settlements(self) -> list[Settlement]:
        return [
            Settlement(
                t.from_agent,
                t.to_agent,
                self._minor(t.amount, f"transfer {t.id}"),
                t.reason,
                t.request_id,
            )
            for t in await self.backend.list_transfers()
        ]

    async def set_frozen(
        self, conn: AsyncConnection, current: WalletRecord, frozen: bool
    ) -> WalletRecord:
        change = self.backend.freeze if frozen else self.backend.unfreeze
        return self._record(await change(current.agent_id), current.create_time)

    async def connected(self) -> bool:
        return (await self.backend.health()).connected

    async def aclose(self) -> None:
        await self.backend.aclose()

    # --- conversions --------------------------------------------------------------------

    async def _on_ledger(self) -> dict[str, WalletContract]:
        return {w.agent_id: w for w in await self.backend.list_wallets()}

    def _record(self, wallet: WalletContract, create_time: int | None) -> WalletRecord:
        changed = (wallet.updated_at - EPOCH) // timedelta(microseconds=1)
        active = wallet.sent_count + wallet.received_count > 0
        return WalletRecord(
            agent_id=wallet.agent_id,
            balance=self._minor(wallet.balance, f"the balance of {wallet.agent_id}"),
            frozen=wallet.frozen,
            sent_count=wallet.sent_count,
            received_count=wallet.received_count,
            create_time=changed if create_time is None else create_time,
            # The wallet contract's creation: its latest transfer unless a freeze came after.
            last_activity_time=changed if active else None,
        )

    def _decimal(self, minor: int) -> Decimal:
        return Decimal(minor).scaleb(-self.currency.scale)

    def _minor(self, value: Decimal, what: str) -> int:
        scaled = value.scaleb(self.currency.scale)
        if scaled < 0 or scaled != scaled.to_integral_value():
            raise P2EError(
                f"Canton holds {what} as {value}: not a whole number of minor units at "
                f"scale {self.currency.scale}",
                reason="CANTON_AMOUNT_MISMATCH",
            )
        return int(scaled)


def check_currency(currency: Currency) -> None:
    """InvalidArgument when Daml's Decimal cannot hold the ledger's amounts exactly."""
    if currency.scale > DAML_SCALE:
        raise InvalidArgument(
            f"ledger.scale {currency.scale} is finer than Daml's Decimal "
            f"({DAML_SCALE} fraction digits)",
            field="ledger.scale",
        )


async def register(conn: AsyncConnection, agent_ids: Sequence[str]) -> dict[str, int]:
    """Registry rows for Canton wallets the gateway has none of; their create times."""
    if not agent_ids:
        return {}
    now = now_us()
    rows = [
        {
            "agent_id": agent,
            "balance": 0,  # the money state is on Canton
            "frozen": False,
            "sent_count": 0,
            "received_count": 0,
            "create_time": now,
            "last_activity_time": None,
        }
        for agent in sorted(agent_ids)
    ]
    await conn.execute(insert(wallets), rows)
    return {agent: now for agent in agent_ids}
