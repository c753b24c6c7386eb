"""The wallets of one write transaction as they stand after the moves made in it so far."""

from __future__ import annotations

from p2e_ledger_gateway.records import TransferRecord, WalletRecord


class Book:
    """Wallet states by agent id, read (and locked) once per transaction, moved in memory.

    The transfers of one batch are decided one after the other against this book, so each
    sees the balances the earlier ones left; the SQL backend then writes the changed wallets
    once (`MoneyBackend.write_moves`)."""

    def __init__(self, wallets: dict[str, WalletRecord]) -> None:
        self.wallets = dict(wallets)
        self.changed: set[str] = set()

    def move(self, record: TransferRecord, payer_after: int, now: int) -> None:
        """`record`'s amount left the payer (whose balance is now `payer_after`) for the payee."""
        # Built field by field: `dataclasses.replace` costs twice as much, twice per transfer.
        payer = self.wallets[record.from_agent]
        payee = self.wallets[record.to_agent]
        self.wallets[payer.agent_id] = WalletRecord(
            payer.agent_id,
            payer_after,
            payer.frozen,
            payer.sent_count + 1,
            payer.received_count,
            payer.create_time,
            now,
        )
        self.wallets[payee.agent_id] = WalletRecord(
            payee.agent_id,
            payee.balance + record.amount,
            payee.frozen,
            payee.sent_count,
            payee.received_count + 1,
            payee.create_time,
            now,
        )
        self.changed |= {payer.agent_id, payee.agent_id}
