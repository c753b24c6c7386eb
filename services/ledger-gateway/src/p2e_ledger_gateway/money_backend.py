"""The seam between the ledger's one transfer path and the place the money lives.

Everything but the money is decided by the gateway, once, for both backends: the caller and
request checks (ledger.py), idempotency, policy and the recorded outcome of every transfer
(transfers.py), approvals (approvals.py), the hash-chained audit log and the outbox. All of
it runs in one write transaction of the gateway's own database, with the wallets' rows of
`ledger_wallets` locked first (transfers.lock_wallets). Only the money goes through a
`MoneyBackend`, from inside that transaction:

- `SqlMoney` (here): balances are columns of those same rows, so the debit, the credit,
  the transfer row, its audit entry and its outbox rows commit together.
- `CantonMoney` (canton_money.py): balances are `Wallet` contracts on a Canton participant;
  the rows are the gateway's registry of those wallets (the foreign-key target of transfers
  and mints). A move is one Canton transaction whose command id comes from (payer,
  request_id), submitted while the rows are locked; if the gateway's transaction then fails,
  the caller's retry finds the transfer on Canton and records it, never moving money twice
  (without a retry, `Ledger.reconcile` does, from `settlements`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import bindparam, insert, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.prepared import unread_write
from p2e_ledger_gateway import queries
from p2e_ledger_gateway.book import Book
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.policy import Refusal
from p2e_ledger_gateway.records import TransferRecord, WalletRecord
from p2e_ledger_gateway.store import now_us, wallets
from p2e_ledger_gateway.transfers import insufficient, lock_wallets


@dataclass(frozen=True)
class Settlement:
    """A transfer as the backend recorded it (what `settlements` lists)."""

    from_agent: str
    to_agent: str
    amount: int
    reason: str
    request_id: str


@dataclass(frozen=True)
class Moved:
    """A move that happened: the payer's balance after it, and the backend's proof of it
    (e.g. the Canton command and update ids), added to the settled audit entry."""

    balance_after: int
    evidence: dict[str, str] = field(default_factory=dict)


class MoneyBackend(Protocol):
    """Where balances live. Write methods run inside the ledger's write transaction `conn`,
    after the caller locked the wallets' rows with `transfers.lock_wallets`."""

    name: str

    @property
    def endpoint(self) -> str:
        """Where the money lives (database URL without password, or JSON API URL)."""
        ...

    async def wallets(
        self, conn: AsyncConnection, agent_ids: Sequence[str], locked: dict[str, WalletRecord]
    ) -> dict[str, WalletRecord]:
        """The named wallets that exist, with their money state; `locked` are their rows."""
        ...

    async def wallet(self, conn: AsyncConnection, agent_id: str) -> WalletRecord | None:
        """One wallet (read-only transaction), None when it does not exist."""
        ...

    async def all_wallets(self, conn: AsyncConnection) -> list[WalletRecord]:
        """Every wallet by agent id (read-only transaction)."""
        ...

    async def create(
        self, conn: AsyncConnection, agent_ids: Sequence[str], balance: int
    ) -> list[str]:
        """Create these wallets (none exists) holding `balance`; the ids created, sorted."""
        ...

    async def move(
        self, conn: AsyncConnection, record: TransferRecord, book: Book
    ) -> Moved | Refusal:
        """Debit the payer and credit the payee of `record`, or refuse (nothing moved); `book`
        (the transaction's wallets, from `wallets`) is moved along."""
        ...

    async def write_moves(self, conn: AsyncConnection, book: Book) -> None:
        """Store the wallets `book` changed, before the transaction commits."""
        ...

    async def already_moved(self, conn: AsyncConnection, record: TransferRecord) -> Moved | None:
        """The move of `record`'s request this backend made earlier but the gateway never
        recorded (it stopped between the backend's commit and its own), or None. Asked before
        a refusal or a pending outcome is recorded, so that a retry never flips a settlement."""
        ...

    async def set_frozen(
        self, conn: AsyncConnection, current: WalletRecord, frozen: bool
    ) -> WalletRecord:
        """Freeze or unfreeze a wallet whose state is `current`; the wallet after."""
        ...

    async def settlements(self) -> list[Settlement]:
        """Every transfer the backend holds a record of, outside the gateway's database
        (Canton's `TransferRecord`s), oldest first: what `Ledger.reconcile` compares with
        the recorded outcomes. Empty where the money and the records are one database."""
        ...

    async def connected(self) -> bool:
        """Whether the backend answers right now; never raises."""
        ...

    async def aclose(self) -> None: ...


_SET_WALLET = unread_write(
    update(wallets)
    .where(wallets.c.agent_id == bindparam("wallet"))
    .values(
        balance=bindparam("new_balance"),
        sent_count=bindparam("new_sent"),
        received_count=bindparam("new_received"),
        last_activity_time=bindparam("new_activity"),
    )
)

# PostgreSQL: the changed wallets in one statement over arrays (one UPDATE per wallet costs
# the server a statement each).
_SET_WALLETS_FROM_ARRAYS = unread_write(
    text(
        f"UPDATE {wallets.name} AS w SET balance = u.balance, sent_count = u.sent, "
        "received_count = u.received, last_activity_time = u.activity "
        "FROM unnest(CAST(:wallet AS TEXT[]), CAST(:new_balance AS BIGINT[]), "
        "CAST(:new_sent AS BIGINT[]), CAST(:new_received AS BIGINT[]), "
        "CAST(:new_activity AS BIGINT[])) AS u(agent_id, balance, sent, received, activity) "
        "WHERE w.agent_id = u.agent_id"
    ),
    wallets.name,
)


def _wallet_row(wallet: WalletRecord) -> dict[str, object]:
    return {
        "wallet": wallet.agent_id,
        "new_balance": wallet.balance,
        "new_sent": wallet.sent_count,
        "new_received": wallet.received_count,
        "new_activity": wallet.last_activity_time,
    }


class SqlMoney:
    """Balances in the ledger's own database: the `ledger_wallets` rows are the wallets."""

    name = "sql"

    def __init__(self, db: Database, currency: Currency) -> None:
        self.db = db
        self.currency = currency

    @property
    def endpoint(self) -> str:
        return self.db.endpoint

    async def wallets(
        self, conn: AsyncConnection, agent_ids: Sequence[str], locked: dict[str, WalletRecord]
    ) -> dict[str, WalletRecord]:
        return locked  # the locked rows are the money state

    async def wallet(self, conn: AsyncConnection, agent_id: str) -> WalletRecord | None:
        return await queries.wallet(conn, agent_id)

    async def all_wallets(self, conn: AsyncConnection) -> list[WalletRecord]:
        return await queries.all_wallets(conn)

    async def create(
        self, conn: AsyncConnection, agent_ids: Sequence[str], balance: int
    ) -> list[str]:
        created = sorted(set(agent_ids))  # a fixed insert order: no deadlock on twins
        now = now_us()
        rows = [
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
        ]
        await conn.execute(insert(wallets), rows)
        return created

    async def move(
        self, conn: AsyncConnection, record: TransferRecord, book: Book
    ) -> Moved | Refusal:
        # The book holds the wallets' rows, locked for this transaction (PostgreSQL) or read
        # by the one writer (SQLite): it is the money state; CHECK (balance >= 0) guards it.
        payer = book.wallets[record.from_agent]
        if payer.balance < record.amount:
            return insufficient(payer.balance, record.amount, self.currency)
        book.move(record, payer.balance - record.amount, now_us())
        return Moved(payer.balance - record.amount)

    async def write_moves(self, conn: AsyncConnection, book: Book) -> None:
        if book.changed:
            rows = [_wallet_row(book.wallets[agent]) for agent in sorted(book.changed)]
            if conn.dialect.name == "postgresql" and len(rows) > 1:
                columns = {key: [row[key] for row in rows] for key in rows[0]}
                await conn.execute(_SET_WALLETS_FROM_ARRAYS, columns)
            else:
                await conn.execute(_SET_WALLET, rows)

    async def already_moved(self, conn: AsyncConnection, record: TransferRecord) -> Moved | None:
        return None  # the move and its record commit in one transaction: no gap

    async def settlements(self) -> list[Settlement]:
        return []  # the same: nothing settled here goes unrecorded

    async def set_frozen(
        self, conn: AsyncConnection, current: WalletRecord, frozen: bool
    ) -> WalletRecord:
        agent_id = current.agent_id
        await conn.execute(
            update(wallets).where(wallets.c.agent_id == agent_id).values(frozen=frozen)
        )
        return (await lock_wallets(conn, [agent_id]))[agent_id]

    async def connected(self) -> bool:
        return await self.db.ping()

    async def aclose(self) -> None:
        """Nothing of its own: the database belongs to the app."""
