"""daml/Wallet.daml re-enacted in Python, for the fake participant.

Each function follows the Daml choice line by line (same checks in the same order, same
`failWithStatus` error ids and categories), so the adapter meets the refusals, contract
churn and events a real participant running the DAR would produce. Values are decoded from
and encoded to the Daml-LF JSON encoding the JSON Ledger API uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

WALLET = "Wallet:Wallet"
TRANSFER_RECORD = "Wallet:TransferRecord"
ERROR_ID_PREFIX = "p2engine.dev/"

# Canton error categories used by the fake.
CAT_TRANSIENT = 1
CAT_CONTENTION = 2
CAT_INTERNAL = 4
CAT_UNAUTHENTICATED = 6
CAT_PERMISSION = 7
CAT_INVALID = 8
CAT_PRECONDITION = 9
CAT_EXISTS = 10
CAT_MISSING = 11
CAT_OUT_OF_RANGE = 12
# category -> gRPC code -> HTTP status, as Canton's JSON API maps them.
CATEGORY_GRPC = {1: 14, 2: 10, 3: 4, 4: 13, 6: 16, 7: 7, 8: 3, 9: 9, 10: 6, 11: 5, 12: 11}
GRPC_HTTP = {3: 400, 9: 400, 11: 400, 16: 401, 7: 403, 5: 404, 10: 409, 6: 409, 8: 429, 13: 500}
GRPC_HTTP |= {14: 503, 4: 504}

FIELDS: dict[str, dict[str, str]] = {
    WALLET: {
        "issuer": "party",
        "owner": "party",
        "agentId": "text",
        "balance": "numeric",
        "frozen": "bool",
        "sentCount": "int",
        "receivedCount": "int",
    },
    TRANSFER_RECORD: {
        "issuer": "party",
        "payer": "party",
        "payee": "party",
        "requestId": "text",
        "fromAgent": "text",
        "toAgent": "text",
        "amount": "numeric",
        "reason": "text",
        "fromBalanceAfter": "numeric",
    },
}
CHOICES: dict[str, dict[str, str]] = {
    "Transfer": {"recipientCid": "cid", "amount": "numeric", "requestId": "text", "reason": "text"},
    "Credit": {"amount": "numeric"},
    "Freeze": {},
    "Unfreeze": {},
}


@dataclass(eq=False)
class Refusal(Exception):
    """A Canton error the fake answers with (a JsCantonError)."""

    code: str
    category: int
    cause: str
    context: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.cause}")

    @property
    def grpc_code(self) -> int:
        return CATEGORY_GRPC.get(self.category, 13)

    @property
    def http_status(self) -> int:
        return GRPC_HTTP.get(self.grpc_code, 500)

    def body(self, correlation_id: str) -> dict[str, Any]:
        return {
            "code": self.code,
            "cause": self.cause,
            "correlationId": correlation_id,
            "traceId": correlation_id,
            "context": {"participant": "fake-participant", **self.context},
            "resources": [],
            "errorCategory": self.category,
            "grpcCodeValue": self.grpc_code,
            "definiteAnswer": False,
        }


def daml_failure(category: int, reason: str, message: str) -> Refusal:
    """What `refuse category reason message` in Wallet.daml turns into on the API."""
    error_id = ERROR_ID_PREFIX + reason
    return Refusal(
        "DAML_FAILURE",
        category,
        f"Interpretation error: Error: failWithStatus {error_id}: {message}",
        {"error_id": error_id},
    )


def decode(kinds: dict[str, str], value: Any, what: str, parties: set[str]) -> dict[str, Any]:
    """A Daml record from its JSON form; refuses missing, extra or ill-typed fields."""
    if not isinstance(value, dict):
        raise _preprocessing(f"{what}: expected a record, got {value!r}")
    if set(value) != set(kinds):
        missing, extra = sorted(set(kinds) - set(value)), sorted(set(value) - set(kinds))
        raise _preprocessing(f"{what}: missing fields {missing}, unexpected fields {extra}")
    return {
        name: _decode_value(kind, value[name], f"{what}.{name}", parties)
        for name, kind in kinds.items()
    }


def encode(kinds: dict[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a Daml record, as a participant renders it (verbose)."""
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        item = record[name]
        if kind == "numeric":
            out[name] = f"{item:.10f}"
        elif kind == "int":
            out[name] = str(item)
        else:
            out[name] = item
    return out


def _decode_value(kind: str, value: Any, where: str, parties: set[str]) -> Any:
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind in ("text", "cid") and isinstance(value, str):
        return value
    if kind == "party" and isinstance(value, str):
        if value not in parties:
            raise _preprocessing(f"{where}: unknown party {value!r}")
        return value
    if kind == "int" and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    if kind == "numeric" and isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite():
            exponent = number.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent <= 10 and abs(number) < Decimal(10) ** 28:
                return number
    raise _preprocessing(f"{where}: {value!r} is not a valid {kind}")


def _preprocessing(cause: str) -> Refusal:
    return Refusal("COMMAND_PREPROCESSING_FAILED", CAT_INVALID, cause)


def ensure(entity: str, args: dict[str, Any]) -> None:
    """The template's `ensure` clause."""
    if entity == WALLET:
        ok = (
            args["agentId"] != ""
            and args["balance"] >= 0
            and args["sentCount"] >= 0
            and args["receivedCount"] >= 0
        )
    else:
        ok = (
            args["requestId"] != ""
            and args["amount"] > 0
            and args["fromAgent"] != args["toAgent"]
            and args["fromBalanceAfter"] >= 0
        )
    if not ok:
        raise Refusal(
            "TEMPLATE_PRECONDITION_VIOLATED",
            CAT_INVALID,
            f"Interpretation error: Error: Template precondition violated: {entity}",
        )


class Tx(Protocol):
    """What a choice body may do: fetch, archive and create contracts (the ledger's side)."""

    def fetch(self, cid: str) -> tuple[str, dict[str, Any]]: ...

    def archive(self, cid: str) -> None: ...

    def create(self, entity: str, args: dict[str, Any]) -> str: ...


def exercise(tx: Tx, cid: str, choice: str, arg: dict[str, Any]) -> Any:
    """Runs `choice` of the Wallet contract `cid` (consuming: archived first, as in Daml)."""
    entity, this = tx.fetch(cid)
    if entity != WALLET or choice not in CHOICES:
        raise _preprocessing(f"template {entity} has no choice {choice}")
    tx.archive(cid)
    if choice == "Transfer":
        return _transfer(tx, cid, this, arg)
    if choice == "Credit":
        return _credit(tx, this, arg["amount"])
    return tx.create(WALLET, {**this, "frozen": choice == "Freeze"})


def _credit(tx: Tx, this: dict[str, Any], amount: Decimal) -> str:
    if amount <= 0:
        raise daml_failure(CAT_INVALID, "INVALID_AMOUNT", "the amount must be positive")
    new = {**this, "balance": this["balance"] + amount, "receivedCount": this["receivedCount"] + 1}
    return tx.create(WALLET, new)


def _transfer(tx: Tx, cid: str, this: dict[str, Any], arg: dict[str, Any]) -> dict[str, str]:
    amount, recipient_cid = arg["amount"], arg["recipientCid"]
    if amount <= 0:
        raise daml_failure(CAT_INVALID, "INVALID_AMOUNT", "the amount must be positive")
    if arg["requestId"] == "":
        raise daml_failure(CAT_INVALID, "INVALID_REQUEST_ID", "the request id is empty")
    if recipient_cid == cid:
        raise daml_failure(CAT_INVALID, "SELF_TRANSFER", "a wallet cannot pay itself")
    if this["frozen"]:
        raise daml_failure(
            CAT_PRECONDITION, "WALLET_FROZEN", f"the wallet of {this['agentId']} is frozen"
        )
    if this["balance"] < amount:
        raise daml_failure(
            CAT_PRECONDITION,
            "INSUFFICIENT_FUNDS",
            f"the wallet of {this['agentId']} holds {this['balance']:.10f}, "
            f"less than {amount:.10f}",
        )
    entity, recipient = tx.fetch(recipient_cid)
    if entity != WALLET:
        raise Refusal("WRONGLY_TYPED_CONTRACT", CAT_PRECONDITION, f"{recipient_cid} is no Wallet")
    if recipient["issuer"] != this["issuer"]:
        raise daml_failure(CAT_PRECONDITION, "ISSUER_MISMATCH", "another issuer's wallet")
    if recipient["agentId"] == this["agentId"]:
        raise daml_failure(CAT_INVALID, "SELF_TRANSFER", "a wallet cannot pay itself")
    new_payee = exercise(tx, recipient_cid, "Credit", {"amount": amount})
    after = this["balance"] - amount
    new_payer = tx.create(WALLET, {**this, "balance": after, "sentCount": this["sentCount"] + 1})
    record = tx.create(
        TRANSFER_RECORD,
        {
            "issuer": this["issuer"],
            "payer": this["owner"],
            "payee": recipient["owner"],
            "requestId": arg["requestId"],
            "fromAgent": this["agentId"],
            "toAgent": recipient["agentId"],
            "amount": amount,
            "reason": arg["reason"],
            "fromBalanceAfter": after,
        },
    )
    return {"newPayerCid": new_payer, "newPayeeCid": new_payee, "recordCid": record}


def stakeholders(entity: str, args: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(signatories, observers) of a contract."""
    if entity == WALLET:
        return [args["issuer"]], [p for p in [args["owner"]] if p != args["issuer"]]
    observers = [p for p in dict.fromkeys([args["payer"], args["payee"]]) if p != args["issuer"]]
    return [args["issuer"]], observers
