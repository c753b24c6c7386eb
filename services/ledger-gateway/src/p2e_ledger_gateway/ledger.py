"""The ledger: who may do what, request validation, and one transaction per operation.

Plain async Python over `Database` and a `MoneyBackend` (SQL or Canton, see
money_backend.py); no grpc. Callers are `p2e_kit.channels.Caller`s
(kind "agent" | "operator" | "service" | "anonymous").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from p2e_kit.errors import InvalidArgument, NotFound, P2EError, PermissionDenied
from p2e_ledger_gateway import approvals, audit, queries, transfers, wallets
from p2e_ledger_gateway.audit import EVENT_TYPES, AuditEntry, Verification
from p2e_ledger_gateway.batcher import TransferBatcher, WriteBatch
from p2e_ledger_gateway.database import Database
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.money_backend import MoneyBackend, SqlMoney
from p2e_ledger_gateway.paging import page_size
from p2e_ledger_gateway.policy import NO_POLICY, Policy
from p2e_ledger_gateway.records import DebugInfo, Metrics, TransferRecord, WalletRecord
from p2e_ledger_gateway.transfers import TransferRequest

if TYPE_CHECKING:
    from p2e_kit.channels import Caller

log = logging.getLogger(__name__)

MAX_ID = 128
MAX_REQUEST_ID = 200
MAX_REASON = 1000
MAX_ACTOR = 200
RECONCILER = "service:ledger-reconciler"  # who records what `reconcile` finds
LOOKUP_CHUNK = 500  # (payer, request_id) pairs per lookup of `reconcile`


@dataclass(frozen=True)
class LedgerOptions:
    currency: Currency = field(default_factory=Currency)
    initial_balance: int = 10_000
    policies: dict[str, Policy] = field(default_factory=dict)
    configured_agents: tuple[str, ...] = ()


class Ledger:
    def __init__(
        self,
        db: Database,
        options: LedgerOptions,
        *,
        money: MoneyBackend | None = None,
        on_outbox: Callable[[], None] | None = None,
        write_batch: WriteBatch | None = None,
    ) -> None:
        self.db = db
        self.options = options
        self.currency = options.currency
        self.money: MoneyBackend = money or SqlMoney(db, options.currency)
        self._on_outbox = on_outbox or (lambda: None)
        self._write_batch = write_batch or self._write_batch_here
        self._batcher = TransferBatcher(self._write_transfers)

    # --- wallets -------------------------------------------------------------------------

    async def init_wallets(
        self, caller: Caller, agent_ids: list[str], initial_balance: str, request_id: str
    ) -> tuple[list[WalletRecord], list[str]]:
        _require_operator(caller, "create wallets")
        ids = list(dict.fromkeys(agent_ids)) or list(self.options.configured_agents)
        if not ids:
            raise InvalidArgument("no agent_ids given and no agents configured", field="agent_ids")
        for agent in ids:
            _check_id(agent, "agent_ids")
        balance = (
            self.currency.parse(initial_balance, field="initial_balance", allow_zero=True)
            if initial_balance
            else self.options.initial_balance
        )
        _check_text(request_id, "request_id", MAX_REQUEST_ID)
        found, created = await self.db.write(
            lambda conn: wallets.create_missing(
                conn, self.money, ids, balance, str(caller), request_id, self.currency
            )
        )
        if created:
            log.info("%s created wallets %s", caller, ", ".join(created))
        return found, created

    async def get_balance(self, caller: Caller, agent_id: str) -> WalletRecord:
        agent_id = agent_id or (caller.id if caller.is_agent else "")
        _check_id(agent_id, "agent_id")
        found = await self.db.read(lambda conn: self.money.wallet(conn, agent_id))
        if found is None:
            raise NotFound(f"no wallet for agent {agent_id!r}", reason="WALLET_NOT_FOUND")
        return found

    async def freeze(
        self, caller: Caller, agent_id: str, reason: str, request_id: str, *, frozen: bool = True
    ) -> WalletRecord:
        _require_operator(caller, "freeze wallets" if frozen else "unfreeze wallets")
        _check_id(agent_id, "agent_id")
        _check_text(reason, "reason", MAX_REASON)
        _check_text(request_id, "request_id", MAX_REQUEST_ID)
        return await self.db.write(
            lambda conn: wallets.set_frozen(
                conn, self.money, agent_id, frozen, str(caller), reason, request_id
            )
        )

    # --- transfers -----------------------------------------------------------------------

    async def create_transfer(
        self,
        caller: Caller,
        *,
        from_agent: str,
        to_agent: str,
        amount: str,
        reason: str,
        request_id: str,
        conversation_id: str = "",
    ) -> TransferRecord:
        """A settled transfer, or the FailedPrecondition of a refused / pending one."""
        payer = _payer(caller, from_agent)
        request = self._transfer_request(
            caller, payer, to_agent, amount, reason, request_id, conversation_id
        )
        policy = self.options.policies.get(payer, NO_POLICY)
        record = await self._batcher.submit((request, policy))
        if isinstance(record, P2EError):
            raise record
        error = transfers.outcome_error(record)
        if error is not None:
            raise error
        return record

    async def reconcile(self) -> list[TransferRecord]:
        """Record the transfers the money backend settled that this ledger never recorded:
        on Canton, a commit whose gateway transaction was lost (a crash between the two) and
        whose caller never retried. Each is written as that retry would be — by the same
        batches, so an outcome recorded meanwhile is replayed, never doubled — settled from
        the backend's record (`already_moved`), actor `RECONCILER`. The new records, oldest
        first; nothing for the SQL backend."""
        settled = await self.money.settlements()
        known: set[tuple[str, str]] = set()
        keys = [(s.from_agent, s.request_id) for s in settled]
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]

            async def work(conn: AsyncConnection, chunk=chunk) -> set[tuple[str, str]]:
                return set(await transfers.find_by_requests(conn, chunk))

            known |= await self.db.read(work)
        recorded = []
        for s in settled:
            if (s.from_agent, s.request_id) in known:
                continue
            request = TransferRequest(
                s.from_agent, s.to_agent, s.amount, s.reason, s.request_id, RECONCILER
            )
            outcome = await self._batcher.submit((request, NO_POLICY))
            if isinstance(outcome, P2EError):
                log.warning(
                    "could not record transfer %s of %s: %s", s.request_id, s.from_agent, outcome
                )
            elif not outcome.replayed:
                log.warning(
                    "transfer %s of %s was on %s but not recorded here: recorded as %s (%s)",
                    s.request_id,
                    s.from_agent,
                    self.money.name,
                    outcome.status.value,
                    outcome.id,
                )
                recorded.append(outcome)
        return recorded

    async def _write_transfers(
        self, items: Sequence[transfers.Item]
    ) -> list[TransferRecord | P2EError]:
        return await self._write_batch(items)

    async def _write_batch_here(
        self, items: Sequence[transfers.Item]
    ) -> list[TransferRecord | P2EError]:
        """The batch in this process (a `write_batch` of another process wakes its own
        publisher)."""
        outcomes = await self.db.write(
            lambda conn: transfers.create_many(conn, self.money, items, self.currency)
        )
        if any(isinstance(o, TransferRecord) and not o.replayed for o in outcomes):
            self._on_outbox()
        return outcomes

    def _transfer_request(
        self,
        caller: Caller,
        payer: str,
        to_agent: str,
        amount: str,
        reason: str,
        request_id: str,
        conversation_id: str,
    ) -> TransferRequest:
        if not request_id:
            raise InvalidArgument("request_id is required (an idempotency key)", field="request_id")
        _check_text(request_id, "request_id", MAX_REQUEST_ID)
        _check_id(payer, "from_agent")
        _check_id(to_agent, "to_agent")
        _check_text(reason, "reason", MAX_REASON)
        _check_text(conversation_id, "p2e-conversation", MAX_ACTOR)
        minor = self.currency.parse(amount, field="amount")
        if payer == to_agent:
            raise InvalidArgument(
                f"{payer} cannot pay itself", field="to_agent", reason="SELF_TRANSFER"
            )
        actor = _actor(caller)
        return TransferRequest(payer, to_agent, minor, reason, request_id, actor, conversation_id)

    async def approve(self, caller: Caller, transfer_id: str, request_id: str) -> TransferRecord:
        _require_operator(caller, "approve transfers")
        _check_text(transfer_id, "transfer_id", MAX_ID, required=True)
        _check_text(request_id, "request_id", MAX_REQUEST_ID)
        record = await self.db.write(
            lambda conn: approvals.approve(
                conn, self.money, transfer_id, str(caller), request_id, self.currency
            )
        )
        if not record.replayed:
            self._on_outbox()
        return record

    async def reject(
        self, caller: Caller, transfer_id: str, reason: str, request_id: str
    ) -> TransferRecord:
        _require_operator(caller, "reject transfers")
        _check_text(transfer_id, "transfer_id", MAX_ID, required=True)
        _check_text(reason, "reason", MAX_REASON)
        _check_text(request_id, "request_id", MAX_REQUEST_ID)
        record = await self.db.write(
            lambda conn: approvals.reject(
                conn, transfer_id, str(caller), reason, request_id, self.currency
            )
        )
        if not record.replayed:
            self._on_outbox()
        return record

    # --- views ---------------------------------------------------------------------------

    async def list_transactions(
        self, caller: Caller, agent_id: str, size: int, token: str
    ) -> tuple[list[TransferRecord], str]:
        agent_id = agent_id or (caller.id if caller.is_agent else "")
        _check_id(agent_id, "agent_id")
        size = page_size(size, default=20, maximum=500)

        async def work(conn: AsyncConnection) -> tuple[list[TransferRecord], str]:
            if await self.money.wallet(conn, agent_id) is None:
                raise NotFound(f"no wallet for agent {agent_id!r}", reason="WALLET_NOT_FOUND")
            return await queries.transactions(conn, agent_id, size, token)

        return await self.db.read(work)

    async def list_audit_events(
        self, size: int, token: str, since: int | None, event_type: str
    ) -> tuple[list[AuditEntry], str]:
        if event_type and event_type not in EVENT_TYPES:
            raise InvalidArgument(
                f"unknown event_type {event_type!r}; one of {', '.join(sorted(EVENT_TYPES))}",
                field="event_type",
            )
        size = page_size(size, default=50, maximum=1000)
        return await self.db.read(
            lambda conn: queries.audit_log(conn, size, token, since, event_type)
        )

    async def verify_audit(self) -> Verification:
        return await self.db.read(audit.verify)

    async def metrics(self) -> Metrics:
        async def work(conn: AsyncConnection) -> Metrics:
            balances = [w.balance for w in await self.money.all_wallets(conn)]
            return await queries.metrics(conn, balances)

        return await self.db.read(work)

    async def overview(self) -> list[WalletRecord]:
        return await self.db.read(self.money.all_wallets)

    async def debug_info(self) -> DebugInfo:
        connected = await self.money.connected()
        # The audit chain and the outbox are in the gateway's database, whatever the backend.
        db_up = connected if isinstance(self.money, SqlMoney) else await self.db.ping()
        sequence, head_hash, pending = 0, "", 0
        if db_up:

            async def work(conn: AsyncConnection) -> tuple[int, str, int]:
                return (*await audit.head(conn), await queries.outbox_pending(conn))

            sequence, head_hash, pending = await self.db.read(work)
        money = self.money
        return DebugInfo(
            money.name,
            money.endpoint,
            connected,
            sequence,
            head_hash,
            pending,
            transfer_batches=self._batcher.batches,
            batched_transfers=self._batcher.transfers,
        )


def _require_operator(caller: Caller, action: str) -> None:
    if caller.kind not in ("operator", "service"):
        who = "an anonymous caller" if caller.kind == "anonymous" else str(caller)
        raise PermissionDenied(f"only an operator or a service may {action}, not {who}")
    _actor(caller)


def _actor(caller: Caller) -> str:
    """How the caller is recorded ("agent:<id>", "operator:<name>", ...)."""
    actor = str(caller)
    _check_text(actor, "p2e-caller", MAX_ACTOR)
    return actor


def _payer(caller: Caller, from_agent: str) -> str:
    """The wallet this caller may debit."""
    if caller.is_agent:
        if from_agent and from_agent != caller.id:
            raise PermissionDenied(
                f"agent {caller.id} may not debit the wallet of {from_agent}",
                reason="NOT_WALLET_OWNER",
            )
        return caller.id
    if caller.is_operator:
        if not from_agent:
            raise InvalidArgument("an operator must name from_agent", field="from_agent")
        return from_agent
    raise PermissionDenied(
        f"moving money needs an agent or operator caller (p2e-caller metadata), not {caller.kind}"
    )


def _check_id(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required", field=name)
    if len(value) > MAX_ID or not all(c.isalnum() or c in "_-" for c in value):
        raise InvalidArgument(
            f"{name} {value[:40]!r} is not an agent id (letters, digits, '_' and '-')", field=name
        )


def _check_text(value: str, name: str, limit: int, *, required: bool = False) -> None:
    if required and not value:
        raise InvalidArgument(f"{name} is required", field=name)
    if len(value) > limit:
        raise InvalidArgument(f"{name} is longer than {limit} characters", field=name)
