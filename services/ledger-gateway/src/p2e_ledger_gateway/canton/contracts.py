"""The Daml side on the wire: template ids, contract payloads, commands and filters.

Values use the Daml-LF JSON encoding of the JSON Ledger API v2: records are objects keyed by
field name, `Decimal` (Numeric 10) and `Int` travel as strings, `Party` and `ContractId` as
strings. Amounts are `decimal.Decimal` end to end; a float never appears.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from p2e_kit.errors import InvalidArgument

WALLET = "Wallet:Wallet"
TRANSFER_RECORD = "Wallet:TransferRecord"
# Daml's Decimal is Numeric 10: at most 10 fraction digits, 28 digits in all.
DAML_SCALE = 10
DAML_MAX = Decimal(10) ** (28 - DAML_SCALE)

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Templates:
    """Template ids of one package, by package name (Canton 3.x's preferred reference)."""

    package_name: str

    def ref(self, entity: str) -> str:
        return f"#{self.package_name}:{entity}"

    @property
    def wallet(self) -> str:
        return self.ref(WALLET)

    @property
    def transfer_record(self) -> str:
        return self.ref(TRANSFER_RECORD)

    def is_(self, event: Mapping[str, Any], entity: str) -> bool:
        """Whether a CreatedEvent is of `entity`; events name templates by package id."""
        template_id = str(event.get("templateId", ""))
        return event.get("packageName") == self.package_name and template_id.endswith(f":{entity}")


@dataclass(frozen=True)
class WalletContract:
    """One active `Wallet` contract."""

    contract_id: str
    issuer: str
    owner: str
    agent_id: str
    balance: Decimal
    frozen: bool
    sent_count: int
    received_count: int
    # Ledger time of the contract's creation: the wallet's last change.
    updated_at: datetime
    offset: int

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> WalletContract:
        args = event["createArgument"]
        return cls(
            contract_id=event["contractId"],
            issuer=args["issuer"],
            owner=args["owner"],
            agent_id=args["agentId"],
            balance=parse_decimal(args["balance"]),
            frozen=bool(args["frozen"]),
            sent_count=int(str(args["sentCount"])),
            received_count=int(str(args["receivedCount"])),
            updated_at=parse_time(event["createdAt"]),
            offset=int(event["offset"]),
        )


@dataclass(frozen=True)
class TransferContract:
    """One active `TransferRecord` contract: a settled transfer."""

    contract_id: str
    request_id: str
    from_agent: str
    to_agent: str
    amount: Decimal
    reason: str
    from_balance_after: Decimal
    created_at: datetime
    offset: int

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> TransferContract:
        args = event["createArgument"]
        return cls(
            contract_id=event["contractId"],
            request_id=args["requestId"],
            from_agent=args["fromAgent"],
            to_agent=args["toAgent"],
            amount=parse_decimal(args["amount"]),
            reason=args["reason"],
            from_balance_after=parse_decimal(args["fromBalanceAfter"]),
            created_at=parse_time(event["createdAt"]),
            offset=int(event["offset"]),
        )


def wallet_arguments(issuer: str, owner: str, agent_id: str, balance: Decimal) -> JsonObject:
    return {
        "issuer": issuer,
        "owner": owner,
        "agentId": agent_id,
        "balance": daml_decimal(balance, field="initial_balance", allow_zero=True),
        "frozen": False,
        "sentCount": "0",
        "receivedCount": "0",
    }


def transfer_argument(
    recipient_cid: str, amount: Decimal, request_id: str, reason: str
) -> JsonObject:
    return {
        "recipientCid": recipient_cid,
        "amount": daml_decimal(amount, field="amount"),
        "requestId": request_id,
        "reason": reason,
    }


def create_command(template_id: str, arguments: JsonObject) -> JsonObject:
    return {"CreateCommand": {"templateId": template_id, "createArguments": arguments}}


def exercise_command(
    template_id: str, contract_id: str, choice: str, argument: JsonObject
) -> JsonObject:
    return {
        "ExerciseCommand": {
            "templateId": template_id,
            "contractId": contract_id,
            "choice": choice,
            "choiceArgument": argument,
        }
    }


def event_format(party: str, template_ids: Iterable[str]) -> JsonObject:
    """An EventFormat selecting `template_ids` visible to `party`, with field labels."""
    return {
        "filtersByParty": {
            party: {
                "cumulative": [
                    {
                        "identifierFilter": {
                            "TemplateFilter": {
                                "value": {"templateId": tid, "includeCreatedEventBlob": False}
                            }
                        }
                    }
                    for tid in template_ids
                ]
            }
        },
        "verbose": True,
    }


def created_events(transaction: Mapping[str, Any]) -> list[JsonObject]:
    """The CreatedEvents of a JsTransaction."""
    return [e["CreatedEvent"] for e in transaction.get("events", []) if "CreatedEvent" in e]


def active_events(entries: Iterable[Mapping[str, Any]]) -> list[JsonObject]:
    """The CreatedEvents of the active contracts in a /v2/state/active-contracts answer."""
    found: list[JsonObject] = []
    for entry in entries:
        active = (entry.get("contractEntry") or {}).get("JsActiveContract")
        if active is not None:
            found.append(active["createdEvent"])
    return found


def command_id(kind: str, *parts: str) -> str:
    """A deterministic LedgerString command id: the same inputs always give the same id.

    Canton deduplicates on (user, actAs, commandId), so a retried request can never commit
    twice within the participant's deduplication period.
    """
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]
    return f"p2e-{kind}-{digest}" if kind else f"p2e-{digest}"


def transfer_command_id(payer: str, request_id: str) -> str:
    """The command id of payer's transfer `request_id`: "p2e-" + sha256(payer|request_id)[:32]."""
    return command_id("", payer, request_id)


def daml_decimal(value: Decimal, *, field: str, allow_zero: bool = False) -> str:
    """`value` as a Daml Numeric 10 string; refuses what Daml would round or reject."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidArgument(f"{field} must be a finite decimal, got {value!r}", field=field)
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgument(f"{field} must be positive, got {value}", field=field)
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > DAML_SCALE:
        raise InvalidArgument(f"{field} {value} has more than {DAML_SCALE} decimals", field=field)
    if value >= DAML_MAX:
        raise InvalidArgument(f"{field} {value} is too large for Daml", field=field)
    return format(value, "f")


def parse_decimal(value: Any) -> Decimal:
    try:
        parsed = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a Daml decimal: {value!r}") from exc
    if not parsed.is_finite():
        raise ValueError(f"not a Daml decimal: {value!r}")
    return parsed


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (any fraction length, 'Z' or offset) as an aware datetime."""
    head, _, tail = text.partition(".")
    if tail:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        fraction, zone = tail[:digits], tail[digits:]
        text = f"{head}.{fraction[:6].ljust(6, '0')}{zone}"
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
