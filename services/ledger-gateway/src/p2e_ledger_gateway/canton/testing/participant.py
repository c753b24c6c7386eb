"""An in-memory Canton participant: parties, users, the p2engine-wallet package, contracts.

It speaks the JSON Ledger API's data (dicts in, dicts out) and raises `Refusal` where a real
participant answers with a JsCantonError: command deduplication on (user, actAs, commandId),
Daml authorization (actAs must hold the signatories), contracts archived meanwhile
(CONTRACT_NOT_FOUND), the Wallet model's own refusals, and, with `auth`, token rights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from p2e_ledger_gateway.canton.config import DEFAULT_PACKAGE_NAME
from p2e_ledger_gateway.canton.testing import wallet_model as wm
from p2e_ledger_gateway.canton.testing.wallet_model import Refusal

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
VERSION = "3.5.10-SNAPSHOT"


@dataclass
class Contract:
    cid: str
    entity: str
    args: dict[str, Any]
    signatories: list[str]
    observers: list[str]
    node_id: int
    created_offset: int = 0
    archived_offset: int | None = None

    def active_at(self, offset: int) -> bool:
        return self.created_offset <= offset and (
            self.archived_offset is None or self.archived_offset > offset
        )


@dataclass
class Auth:
    """Token checks of a participant with authorization on (an auth-less sandbox has none)."""

    audience: str
    secret: bytes | None = None
    admins: set[str] = field(default_factory=lambda: {"participant_admin"})


class FakeParticipant:
    """One participant's ledger state and the operations the P2Engine adapter uses."""

    def __init__(self, *, package_name: str = DEFAULT_PACKAGE_NAME, auth: Auth | None = None):
        self.package_name = package_name
        self.package_id = _hex(f"package|{package_name}")
        self.fingerprint = "1220" + _hex("participant")[:60]
        self.synchronizer_id = f"fake-sync::{self.fingerprint}"
        self.auth = auth
        self.parties: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.rights: dict[str, list[dict[str, Any]]] = {}
        self.contracts: dict[str, Contract] = {}
        self.offset = 0
        self.completions: dict[tuple[str, frozenset[str], str], int] = {}

    # --- parties and users --------------------------------------------------------------

    def allocate_party(self, body: dict[str, Any]) -> dict[str, Any]:
        hint = body.get("partyIdHint") or f"party-{len(self.parties) + 1}"
        if not all(ch.isalnum() or ch in " :-_" for ch in hint) or len(hint) > 255:
            raise Refusal("INVALID_ARGUMENT", wm.CAT_INVALID, f"bad party id hint {hint!r}")
        party = f"{hint}::{self.fingerprint}"
        if party in self.parties:
            raise Refusal("PARTY_ALREADY_EXISTS", wm.CAT_EXISTS, f"party {party} already exists")
        self.parties[party] = {"party": party, "isLocal": True, "identityProviderId": ""}
        return {"partyDetails": self.parties[party]}

    def list_parties(self, page_size: int, page_token: str) -> dict[str, Any]:
        ordered = sorted(self.parties)
        start = int(page_token or 0)
        end = start + max(1, page_size)
        page = [self.parties[p] for p in ordered[start:end]]
        return {"partyDetails": page, "nextPageToken": str(end) if end < len(ordered) else ""}

    def get_user(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.users:
            raise Refusal("USER_NOT_FOUND", wm.CAT_MISSING, f"user {user_id!r} not found")
        return {"user": self.users[user_id]}

    def create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        user = body["user"]
        if user["id"] in self.users:
            raise Refusal("USER_ALREADY_EXISTS", wm.CAT_EXISTS, f"user {user['id']!r} exists")
        stored = {
            "id": user["id"],
            "primaryParty": user.get("primaryParty", ""),
            "isDeactivated": bool(user.get("isDeactivated", False)),
            "metadata": {"resourceVersion": "0", "annotations": {}},
            "identityProviderId": user.get("identityProviderId", ""),
        }
        self.users[user["id"]] = stored
        self.rights[user["id"]] = []
        self._grant(user["id"], body.get("rights") or [])
        return {"user": stored}

    def grant_rights(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if body["userId"] != user_id:
            raise Refusal("INVALID_ARGUMENT", wm.CAT_INVALID, "user id of path and body differ")
        self.get_user(user_id)
        return {"newlyGrantedRights": self._grant(user_id, body.get("rights") or [])}

    def list_rights(self, user_id: str) -> dict[str, Any]:
        self.get_user(user_id)
        return {"rights": self.rights[user_id]}

    def _grant(self, user_id: str, rights: list[dict[str, Any]]) -> list[dict[str, Any]]:
        new = [r for r in rights if r not in self.rights[user_id]]
        self.rights[user_id].extend(new)
        return new

    def may(self, user_id: str | None, right: str, party: str) -> bool:
        """Whether `user_id` holds CanActAs (or, for "CanReadAs", either) on `party`."""
        if self.auth is None:
            return True
        if user_id is None or user_id not in self.users:
            return False
        kinds = {"CanActAs"} if right == "CanActAs" else {"CanActAs", "CanReadAs"}
        for granted in self.rights[user_id]:
            ((kind, value),) = granted["kind"].items()
            if kind in kinds and value["value"]["party"] == party:
                return True
        return False

    def is_admin(self, user_id: str | None) -> bool:
        if self.auth is None:
            return True
        if user_id in self.auth.admins:
            return True
        rights = self.rights.get(user_id or "", [])
        return any("ParticipantAdmin" in r["kind"] for r in rights)

    # --- state --------------------------------------------------------------------------

    def ledger_end(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def active_contracts(self, body: dict[str, Any], user_id: str | None) -> list[dict[str, Any]]:
        at = body["activeAtOffset"]
        if at > self.offset:
            raise Refusal("OFFSET_AFTER_LEDGER_END", wm.CAT_OUT_OF_RANGE, f"{at} > {self.offset}")
        wanted = self._filters(body.get("eventFormat") or {}, [])
        for party in wanted:
            if not self.may(user_id, "CanReadAs", party):
                raise Refusal("PERMISSION_DENIED", wm.CAT_PERMISSION, "security-sensitive error")
        entries = []
        for contract in sorted(
            self.contracts.values(), key=lambda c: (c.created_offset, c.node_id)
        ):
            witnesses = _witnesses(wanted, contract)
            if contract.active_at(at) and at > 0 and witnesses:
                event = self._created(contract, witnesses)
                active = {
                    "createdEvent": event,
                    "synchronizerId": self.synchronizer_id,
                    "reassignmentCounter": 0,
                }
                entries.append({"workflowId": "", "contractEntry": {"JsActiveContract": active}})
        return entries

    # --- commands -----------------------------------------------------------------------

    def submit(self, body: dict[str, Any], token_user: str | None) -> dict[str, Any]:
        """Interprets and commits one atomic command: JsSubmitAndWaitForTransactionResponse."""
        commands = body["commands"]
        act_as = list(commands["actAs"])
        user_id = commands.get("userId") or token_user or ""
        if self.auth is not None and token_user is not None and user_id != token_user:
            raise Refusal("PERMISSION_DENIED", wm.CAT_PERMISSION, "userId differs from token")
        for party in act_as:
            if party not in self.parties or not self.may(user_id, "CanActAs", party):
                raise Refusal("PERMISSION_DENIED", wm.CAT_PERMISSION, "security-sensitive error")
        change = (user_id, frozenset(act_as), commands["commandId"])
        if change in self.completions:
            raise Refusal(
                "DUPLICATE_COMMAND",
                wm.CAT_EXISTS,
                "A command with the given command id has already been successfully processed",
                {"completion_offset": str(self.completions[change])},
            )
        tx = _Transaction(self, set(act_as))
        for command in commands["commands"]:
            tx.run(command)
        offset = tx.commit()
        self.completions[change] = offset
        event_format = (body.get("transactionFormat") or {}).get("eventFormat") or {}
        wanted = self._filters(event_format, act_as)
        return {"transaction": self._transaction(tx, wanted, commands["commandId"], offset)}

    def entity_of(self, template_id: str) -> str:
        """Resolves "#<package-name>:M:T" or "<package-id>:M:T" to "M:T"."""
        for prefix in (f"#{self.package_name}:", f"{self.package_id}:"):
            entity = template_id.removeprefix(prefix)
            if entity != template_id and entity in wm.FIELDS:
                return entity
        raise Refusal("TEMPLATES_OR_INTERFACES_NOT_FOUND", wm.CAT_MISSING, template_id)

    def time_at(self, offset: int) -> str:
        return (EPOCH + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")

    def _filters(self, event_format: dict[str, Any], default: list[str]) -> dict[str, set[str]]:
        """party -> visible entities, from an EventFormat (all templates for a wildcard)."""
        by_party = dict(event_format.get("filtersByParty") or {})
        if "filtersForAnyParty" in event_format:
            by_party |= {p: event_format["filtersForAnyParty"] for p in self.parties}
        if not by_party:
            by_party = {p: {} for p in default}
        wanted: dict[str, set[str]] = {}
        for party, filters in by_party.items():
            entities: set[str] = set()
            for cumulative in filters.get("cumulative") or [{}]:
                identifier = cumulative.get("identifierFilter") or {"WildcardFilter": {}}
                if "TemplateFilter" in identifier:
                    entities.add(
                        self.entity_of(identifier["TemplateFilter"]["value"]["templateId"])
                    )
                else:
                    entities |= set(wm.FIELDS)
            wanted[party] = entities
        return wanted

    def _transaction(
        self, tx: _Transaction, wanted: dict[str, set[str]], command_id: str, offset: int
    ) -> dict[str, Any]:
        events: list[dict[str, Any]] = []
        for node_id, kind, contract in sorted(tx.log, key=lambda e: e[0]):
            witnesses = _witnesses(wanted, contract)
            if not witnesses:
                continue
            if kind == "created":
                events.append({"CreatedEvent": self._created(contract, witnesses)})
            else:
                archived = {
                    "offset": offset,
                    "nodeId": node_id,
                    "contractId": contract.cid,
                    "templateId": f"{self.package_id}:{contract.entity}",
                    "witnessParties": witnesses,
                    "packageName": self.package_name,
                    "implementedInterfaces": [],
                }
                events.append({"ArchivedEvent": archived})
        return {
            "updateId": "1220" + _hex(f"update|{offset}")[:60],
            "commandId": command_id,
            "workflowId": "",
            "effectiveAt": self.time_at(offset),
            "events": events,
            "offset": offset,
            "synchronizerId": self.synchronizer_id,
            "recordTime": self.time_at(offset),
        }

    def _created(self, contract: Contract, witnesses: list[str]) -> dict[str, Any]:
        return {
            "offset": contract.created_offset,
            "nodeId": contract.node_id,
            "contractId": contract.cid,
            "templateId": f"{self.package_id}:{contract.entity}",
            "createArgument": wm.encode(wm.FIELDS[contract.entity], contract.args),
            "createdEventBlob": "",
            "interfaceViews": [],
            "witnessParties": witnesses,
            "signatories": contract.signatories,
            "observers": contract.observers,
            "createdAt": self.time_at(contract.created_offset),
            "packageName": self.package_name,
            "representativePackageId": self.package_id,
            "acsDelta": True,
        }


class _Transaction:
    """One command's effects, applied to the ledger only by `commit` (atomic)."""

    def __init__(self, ledger: FakeParticipant, act_as: set[str]) -> None:
        self.ledger = ledger
        self.act_as = act_as
        self.log: list[tuple[int, str, Contract]] = []
        self.created: dict[str, Contract] = {}
        self.consumed: set[str] = set()

    def run(self, command: dict[str, Any]) -> None:
        ((kind, spec),) = command.items()
        entity = self.ledger.entity_of(spec["templateId"])
        parties = set(self.ledger.parties)
        if kind == "CreateCommand":
            self.create(
                entity, wm.decode(wm.FIELDS[entity], spec["createArguments"], entity, parties)
            )
        elif kind == "ExerciseCommand" and spec["choice"] in wm.CHOICES:
            choice = spec["choice"]
            argument = wm.decode(wm.CHOICES[choice], spec["choiceArgument"], choice, parties)
            wm.exercise(self, spec["contractId"], choice, argument)
        else:
            raise Refusal("COMMAND_PREPROCESSING_FAILED", wm.CAT_INVALID, f"unsupported {kind}")

    def fetch(self, cid: str) -> tuple[str, dict[str, Any]]:
        contract = self.created.get(cid) or self.ledger.contracts.get(cid)
        visible = (
            contract is not None
            and (set(contract.signatories) | set(contract.observers)) & self.act_as
        )
        if contract is None or not visible or contract.archived_offset is not None:
            raise Refusal(
                "CONTRACT_NOT_FOUND", wm.CAT_MISSING, f"Contract could not be found with id {cid}"
            )
        if cid in self.consumed:
            raise Refusal("CONTRACT_NOT_ACTIVE", wm.CAT_MISSING, f"contract {cid} was consumed")
        return contract.entity, dict(contract.args)

    def archive(self, cid: str) -> None:
        contract = self.created.get(cid) or self.ledger.contracts[cid]
        self._authorize(contract.signatories)
        self.consumed.add(cid)
        self.log.append((len(self.log), "archived", contract))

    def create(self, entity: str, args: dict[str, Any]) -> str:
        wm.ensure(entity, args)
        signatories, observers = wm.stakeholders(entity, args)
        self._authorize(signatories)
        node_id = len(self.log)
        cid = "00" + _hex(f"{self.ledger.offset + 1}|{node_id}|{entity}|{sorted(args.items())}")
        contract = Contract(cid, entity, args, signatories, observers, node_id)
        self.created[cid] = contract
        self.log.append((node_id, "created", contract))
        return cid

    def commit(self) -> int:
        self.ledger.offset += 1
        offset = self.ledger.offset
        for cid in self.consumed:
            if cid in self.ledger.contracts:
                self.ledger.contracts[cid].archived_offset = offset
        for cid, contract in self.created.items():
            if cid not in self.consumed:
                contract.created_offset = offset
                self.ledger.contracts[cid] = contract
        transient = self.consumed & set(self.created)
        self.log = [e for e in self.log if e[2].cid not in transient]
        return offset

    def _authorize(self, signatories: list[str]) -> None:
        if not set(signatories) <= self.act_as:
            raise Refusal(
                "DAML_AUTHORIZATION_ERROR",
                wm.CAT_INVALID,
                f"Interpretation error: missing authorization from {sorted(signatories)}",
            )


def _witnesses(wanted: dict[str, set[str]], contract: Contract) -> list[str]:
    stakeholders = set(contract.signatories) | set(contract.observers)
    return sorted(
        p for p, entities in wanted.items() if p in stakeholders and contract.entity in entities
    )


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
