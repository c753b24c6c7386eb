"""The ledger on Canton 3.x: wallets as `Wallet` contracts, transfers as Daml transactions.

Plain async Python over `CantonJsonClient`; no grpc, no SQL. Who may do what (the caller
identity, policies, approvals, audit) is the ledger service's job; this backend only keeps
the money on the ledger:

- wallets are found by an active-contract query (Canton 3.x has no contract keys);
- a transfer is one `Transfer` exercise whose `commandId` is derived from (payer, request_id),
  so Canton itself refuses a second commit of the same request (DUPLICATE_COMMAND), which is
  answered by replaying the recorded `TransferRecord`;
- contention (the wallet contracts changed under us) is retried with fresh contracts, a
  bounded number of times, then surfaces as Conflict (ABORTED);
- Daml refusals become FailedPrecondition/InvalidArgument with the model's reason
  (INSUFFICIENT_FUNDS, WALLET_FROZEN, ...); an unreachable participant DependencyUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

import httpx

from p2e_kit.appconfig import LedgerConfig
from p2e_kit.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from p2e_ledger_gateway.canton import contracts as c
from p2e_ledger_gateway.canton.auth import TokenProvider
from p2e_ledger_gateway.canton.client import CantonJsonClient
from p2e_ledger_gateway.canton.config import CantonSettings
from p2e_ledger_gateway.canton.contracts import TransferContract, WalletContract
from p2e_ledger_gateway.canton.errors import CantonError, refusal, translated, unexpected
from p2e_ledger_gateway.canton.provision import Provisioner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CantonTransfer:
    """A settled transfer as the ledger recorded it."""

    # The transfer's command id: the same for every retry and replay of the request.
    id: str
    request_id: str
    from_agent: str
    to_agent: str
    amount: Decimal
    reason: str
    from_balance_after: Decimal
    create_time: datetime
    # The Canton update that settled it; empty on a replay.
    update_id: str = ""
    replayed: bool = False


@dataclass(frozen=True)
class InitResult:
    wallets: list[WalletContract]
    created_agent_ids: list[str]


@dataclass(frozen=True)
class CantonHealth:
    connected: bool
    endpoint: str
    version: str = ""
    error: str = ""


class CantonLedgerBackend:
    """Wallets and transfers on a Canton participant, through the JSON Ledger API v2."""

    name = "canton"

    def __init__(
        self,
        client: CantonJsonClient,
        settings: CantonSettings,
        *,
        party_id: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self._settings = settings
        self._templates = c.Templates(settings.package_name)
        self._parties = Provisioner(client, settings, party_id)
        self._sleep = sleep

    @classmethod
    def from_config(
        cls,
        ledger: LedgerConfig,
        settings: CantonSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> CantonLedgerBackend:
        """The backend `config.json`'s `ledger` section names (`backend: "canton"`)."""
        settings = settings or CantonSettings()
        client = CantonJsonClient(
            ledger.json_api_url, TokenProvider(settings), settings, transport=transport, sleep=sleep
        )
        return cls(client, settings, party_id=ledger.party_id, sleep=sleep)

    @property
    def endpoint(self) -> str:
        return self.client.base_url

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- wallets ------------------------------------------------------------------------

    @translated("init wallets")
    async def init_wallets(self, agent_ids: Sequence[str], initial_balance: Decimal) -> InitResult:
        """Creates a wallet for each agent that has none; existing wallets are left as they are.

        One command per agent, with a command id derived from (issuer, agent): within the
        participant's deduplication period, two gateways initialising at once cannot both
        create a wallet for the same agent.
        """
        c.daml_decimal(initial_balance, field="initial_balance", allow_zero=True)
        wanted = list(dict.fromkeys(agent_ids))
        issuer = await self._parties.issuer()
        wallets = await self._wallets()
        missing = [a for a in wanted if a not in wallets]
        if missing:
            owners = await self._parties.owners(missing)
            for agent_id in missing:
                await self._create_wallet(issuer, owners[agent_id], agent_id, initial_balance)
            wallets = await self._wallets()
        created = [a for a in missing if a in wallets]
        return InitResult([wallets[a] for a in wanted if a in wallets], created)

    @translated("get balance")
    async def get_balance(self, agent_id: str) -> WalletContract:
        """The agent's wallet. NotFound (WALLET_NOT_FOUND) if it has none."""
        return _wallet_of(await self._wallets(), agent_id)

    @translated("list wallets")
    async def list_wallets(self) -> list[WalletContract]:
        """Every wallet, by agent id."""
        wallets = await self._wallets()
        return [wallets[a] for a in sorted(wallets)]

    @translated("freeze")
    async def freeze(self, agent_id: str) -> WalletContract:
        return await self._set_frozen(agent_id, frozen=True)

    @translated("unfreeze")
    async def unfreeze(self, agent_id: str) -> WalletContract:
        return await self._set_frozen(agent_id, frozen=False)

    # --- transfers ----------------------------------------------------------------------

    @translated("transfer")
    async def transfer(
        self, from_agent: str, to_agent: str, amount: Decimal, reason: str, request_id: str
    ) -> CantonTransfer:
        """Moves `amount` from one wallet to another, exactly once per (payer, request_id).

        A repeated request_id with the same parameters replays the recorded transfer
        (`replayed=True`); with other parameters it is AlreadyExists (REQUEST_ID_REUSED).
        """
        if from_agent == to_agent:
            raise InvalidArgument(
                f"{from_agent} cannot pay itself", field="to_agent", reason="SELF_TRANSFER"
            )
        if not request_id:
            raise InvalidArgument("request_id is empty", field="request_id")
        c.daml_decimal(amount, field="amount")
        command_id = c.transfer_command_id(from_agent, request_id)
        attempts = max(1, self._settings.contention_attempts)
        for attempt in range(1, attempts + 1):
            settled = await self._try_transfer(
                from_agent, to_agent, amount, reason, request_id, command_id
            )
            if settled is not None:
                return settled
            if attempt < attempts:
                await self._sleep(self._settings.backoff(attempt))
        raise Conflict(
            f"transfer {request_id!r} of {from_agent} met contention {attempts} times; retry it",
            reason="LEDGER_CONTENTION",
            metadata={"transfer_id": command_id},
        )

    async def _try_transfer(
        self,
        from_agent: str,
        to_agent: str,
        amount: Decimal,
        reason: str,
        request_id: str,
        command_id: str,
    ) -> CantonTransfer | None:
        """One attempt on fresh contracts: the settled or replayed transfer; None on contention."""
        issuer = await self._parties.issuer()
        wallets, records = await self._snapshot()
        recorded = _record_of(records, from_agent, request_id)
        if recorded is not None:
            return _replay(recorded, command_id, to_agent, amount, reason)
        payer = _wallet_of(wallets, from_agent)
        payee = _wallet_of(wallets, to_agent)
        argument = c.transfer_argument(payee.contract_id, amount, request_id, reason)
        command = c.exercise_command(
            self._templates.wallet, payer.contract_id, "Transfer", argument
        )
        try:
            transaction = await self._submit([command], command_id, issuer)
        except CantonError as err:
            if err.is_interpretation:
                raise refusal(err, subject=f"wallet:{from_agent}") from err
            if not (err.is_duplicate or err.is_contention):
                raise unexpected(f"transfer {request_id!r}", err) from err
            log.info("canton transfer %s: %s", command_id, err.code)
            if err.is_duplicate:  # it committed earlier: answer with what it recorded
                _, records = await self._snapshot()
                recorded = _record_of(records, from_agent, request_id)
                if recorded is not None:
                    return _replay(recorded, command_id, to_agent, amount, reason)
            return None
        return await self._settled(transaction, command_id, from_agent, request_id)

    @translated("list transactions")
    async def list_transactions(self, agent_id: str) -> list[TransferContract]:
        """The agent's settled transfers, sent and received, newest first."""
        wallets, records = await self._snapshot()
        _wallet_of(wallets, agent_id)
        mine = [r for r in records if agent_id in (r.from_agent, r.to_agent)]
        return sorted(mine, key=lambda r: (r.offset, r.created_at, r.contract_id), reverse=True)

    @translated("list transfers")
    async def list_transfers(self) -> list[CantonTransfer]:
        """Every transfer recorded on the ledger (its `TransferRecord`), oldest first."""
        _, records = await self._snapshot()
        ordered = sorted(records, key=lambda r: (r.offset, r.created_at, r.contract_id))
        return [_result(r, c.transfer_command_id(r.from_agent, r.request_id)) for r in ordered]

    @translated("find transfer")
    async def find_transfer(self, from_agent: str, request_id: str) -> CantonTransfer | None:
        """The recorded transfer of (payer, request_id), if any."""
        _, records = await self._snapshot()
        recorded = _record_of(records, from_agent, request_id)
        if recorded is None:
            return None
        return _result(recorded, c.transfer_command_id(from_agent, request_id))

    # --- health -------------------------------------------------------------------------

    async def health(self) -> CantonHealth:
        """Whether the participant answers right now (one attempt, never raises)."""
        try:
            version = await self.client.version()
        except (httpx.TransportError, CantonError, KeyError, ValueError) as exc:
            return CantonHealth(False, self.endpoint, error=str(exc) or type(exc).__name__)
        return CantonHealth(True, self.endpoint, version=version)

    # --- internals ----------------------------------------------------------------------

    async def _submit(
        self, commands: list[c.JsonObject], command_id: str, issuer: str
    ) -> c.JsonObject:
        return await self.client.submit_and_wait_for_transaction(
            commands,
            command_id=command_id,
            act_as=[issuer],
            event_format=self._format(issuer, both=True),
        )

    async def _create_wallet(
        self, issuer: str, owner: str, agent_id: str, balance: Decimal
    ) -> None:
        arguments = c.wallet_arguments(issuer, owner, agent_id, balance)
        command = c.create_command(self._templates.wallet, arguments)
        try:
            await self._submit([command], c.command_id("init", issuer, agent_id), issuer)
        except CantonError as err:
            # Already created by an earlier or concurrent init: the re-read will show it.
            if not (err.is_duplicate or err.is_contention):
                raise unexpected(f"creating the wallet of {agent_id!r}", err) from err
            log.info("canton wallet of %s already being created: %s", agent_id, err.code)

    async def _set_frozen(self, agent_id: str, *, frozen: bool) -> WalletContract:
        choice = "Freeze" if frozen else "Unfreeze"
        attempts = max(1, self._settings.contention_attempts)
        for attempt in range(1, attempts + 1):
            issuer = await self._parties.issuer()
            wallet = _wallet_of(await self._wallets(), agent_id)
            if wallet.frozen == frozen:
                return wallet
            command = c.exercise_command(self._templates.wallet, wallet.contract_id, choice, {})
            try:
                await self._submit([command], c.command_id(choice, wallet.contract_id), issuer)
            except CantonError as err:
                if not (err.is_duplicate or err.is_contention):
                    raise unexpected(f"{choice} of {agent_id!r}", err) from err
                if attempt < attempts:
                    await self._sleep(self._settings.backoff(attempt))
                continue
            return _wallet_of(await self._wallets(), agent_id)
        raise Conflict(
            f"{choice} of {agent_id} met contention {attempts} times; retry it",
            reason="LEDGER_CONTENTION",
        )

    async def _settled(
        self, transaction: c.JsonObject, command_id: str, from_agent: str, request_id: str
    ) -> CantonTransfer:
        for event in c.created_events(transaction):
            if self._templates.is_(event, c.TRANSFER_RECORD):
                record = TransferContract.from_event(event)
                return _result(record, command_id, update_id=str(transaction.get("updateId", "")))
        # The answer's filter hid the record (it should not): read it back.
        found = await self.find_transfer(from_agent, request_id)
        if found is None:
            raise unexpected(
                f"transfer {request_id!r}", CantonError(200, "NO_TRANSFER_RECORD", command_id)
            )
        return found

    def _format(self, issuer: str, *, both: bool) -> c.JsonObject:
        templates = [self._templates.wallet]
        if both:
            templates.append(self._templates.transfer_record)
        return c.event_format(issuer, templates)

    async def _wallets(self) -> dict[str, WalletContract]:
        issuer = await self._parties.issuer()
        events = await self.client.active_contracts(self._format(issuer, both=False))
        return _index_wallets(
            WalletContract.from_event(e) for e in events if self._templates.is_(e, c.WALLET)
        )

    async def _snapshot(self) -> tuple[dict[str, WalletContract], list[TransferContract]]:
        """Wallets and transfer records at one ledger offset (one active-contract query)."""
        issuer = await self._parties.issuer()
        events = await self.client.active_contracts(self._format(issuer, both=True))
        wallets = _index_wallets(
            WalletContract.from_event(e) for e in events if self._templates.is_(e, c.WALLET)
        )
        records = [
            TransferContract.from_event(e)
            for e in events
            if self._templates.is_(e, c.TRANSFER_RECORD)
        ]
        return wallets, records


def _index_wallets(wallets: Iterable[WalletContract]) -> dict[str, WalletContract]:
    """Wallets by agent id. Should two exist for one agent, the oldest one counts."""
    index: dict[str, WalletContract] = {}
    for wallet in sorted(wallets, key=lambda w: (w.offset, w.contract_id)):
        if wallet.agent_id in index:
            log.error("canton: two Wallet contracts for %s; using the oldest", wallet.agent_id)
            continue
        index[wallet.agent_id] = wallet
    return index


def _wallet_of(wallets: dict[str, WalletContract], agent_id: str) -> WalletContract:
    wallet = wallets.get(agent_id)
    if wallet is None:
        raise NotFound(f"no wallet for agent {agent_id!r}", reason="WALLET_NOT_FOUND")
    return wallet


def _record_of(
    records: list[TransferContract], from_agent: str, request_id: str
) -> TransferContract | None:
    for record in records:
        if record.from_agent == from_agent and record.request_id == request_id:
            return record
    return None


def _result(record: TransferContract, command_id: str, *, update_id: str = "") -> CantonTransfer:
    return CantonTransfer(
        id=command_id,
        request_id=record.request_id,
        from_agent=record.from_agent,
        to_agent=record.to_agent,
        amount=record.amount,
        reason=record.reason,
        from_balance_after=record.from_balance_after,
        create_time=record.created_at,
        update_id=update_id,
    )


def _replay(
    record: TransferContract, command_id: str, to_agent: str, amount: Decimal, reason: str
) -> CantonTransfer:
    if (record.to_agent, record.amount, record.reason) != (to_agent, amount, reason):
        raise AlreadyExists(
            f"request_id {record.request_id!r} of {record.from_agent} was used for another transfer",
            reason="REQUEST_ID_REUSED",
            metadata={"transfer_id": command_id},
        )
    return replace(_result(record, command_id), replayed=True)
