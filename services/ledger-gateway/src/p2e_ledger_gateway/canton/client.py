"""A small async client of the Canton 3.x JSON Ledger API v2 (the endpoints P2Engine uses).

Every call carries `Authorization: Bearer <token>` from a `TokenProvider`. Transient failures
(timeouts, connection errors, 5xx, 429) are retried a bounded number of times with the same
body, which is safe: reads are reads, and a resubmitted command has the same `commandId`, so
Canton deduplicates it (DUPLICATE_COMMAND) rather than committing it twice. After the last
attempt the failure surfaces as the kit's DependencyUnavailable. Any other non-2xx answer
raises `CantonError` for the caller to interpret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

import httpx

from p2e_ledger_gateway.canton.auth import TokenProvider
from p2e_ledger_gateway.canton.config import CantonSettings
from p2e_ledger_gateway.canton.contracts import JsonObject, active_events
from p2e_ledger_gateway.canton.errors import CantonError, unavailable

log = logging.getLogger(__name__)

SUBMIT_FOR_TRANSACTION = "/v2/commands/submit-and-wait-for-transaction"
ACTIVE_CONTRACTS = "/v2/state/active-contracts"
LEDGER_END = "/v2/state/ledger-end"
PARTIES = "/v2/parties"
USERS = "/v2/users"
VERSION = "/v2/version"
LIVEZ = "/livez"


def can_act_as(party: str) -> JsonObject:
    return {"kind": {"CanActAs": {"value": {"party": party}}}}


def can_read_as(party: str) -> JsonObject:
    return {"kind": {"CanReadAs": {"value": {"party": party}}}}


class CantonJsonClient:
    """One participant's JSON Ledger API over an `httpx.AsyncClient`."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        settings: CantonSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self._settings = settings
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=settings.timeout_seconds,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CantonJsonClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- commands -----------------------------------------------------------------------

    async def submit_and_wait_for_transaction(
        self,
        commands: list[JsonObject],
        *,
        command_id: str,
        act_as: list[str],
        event_format: JsonObject,
        read_as: Iterable[str] = (),
    ) -> JsonObject:
        """Submits one atomic command; returns its JsTransaction (ACS-delta shaped)."""
        body = {
            "commands": {
                "commands": commands,
                "commandId": command_id,
                "actAs": act_as,
                "readAs": list(read_as),
                "userId": self.tokens.user_id,
            },
            "transactionFormat": {
                "eventFormat": event_format,
                "transactionShape": "TRANSACTION_SHAPE_ACS_DELTA",
            },
        }
        answer = await self._call("POST", SUBMIT_FOR_TRANSACTION, what="submit", json=body)
        return answer["transaction"]

    # --- state --------------------------------------------------------------------------

    async def ledger_end(self) -> int:
        answer = await self._call("GET", LEDGER_END, what="ledger end")
        return int(answer.get("offset") or 0)

    async def active_contracts(self, event_format: JsonObject) -> list[JsonObject]:
        """CreatedEvents of the contracts `event_format` selects, active at the ledger end."""
        offset = await self.ledger_end()
        if offset == 0:
            return []
        body = {"activeAtOffset": offset, "eventFormat": event_format}
        answer = await self._call("POST", ACTIVE_CONTRACTS, what="active contracts", json=body)
        return active_events(answer)

    # --- parties and users --------------------------------------------------------------

    async def list_parties(self) -> list[str]:
        """Every party id known to the participant (all pages)."""
        parties: list[str] = []
        token = ""
        while True:
            params: dict[str, str | int] = {"pageSize": self._settings.page_size}
            if token:
                params["pageToken"] = token
            answer = await self._call("GET", PARTIES, what="list parties", params=params)
            parties.extend(p["party"] for p in answer.get("partyDetails", []))
            token = answer.get("nextPageToken") or ""
            if not token:
                return parties

    async def allocate_party(self, hint: str) -> str:
        body = {"partyIdHint": hint, "identityProviderId": ""}
        answer = await self._call("POST", PARTIES, what="allocate party", json=body)
        return answer["partyDetails"]["party"]

    async def get_user(self, user_id: str) -> JsonObject | None:
        try:
            answer = await self._call("GET", f"{USERS}/{_seg(user_id)}", what="get user")
        except CantonError as err:
            if err.is_not_found:
                return None
            raise
        return answer["user"]

    async def create_user(
        self, user_id: str, primary_party: str, rights: list[JsonObject]
    ) -> JsonObject:
        body = {
            "user": {
                "id": user_id,
                "primaryParty": primary_party,
                "isDeactivated": False,
                "identityProviderId": "",
            },
            "rights": rights,
        }
        answer = await self._call("POST", USERS, what="create user", json=body)
        return answer["user"]

    async def grant_rights(self, user_id: str, rights: list[JsonObject]) -> list[JsonObject]:
        body = {"userId": user_id, "rights": rights, "identityProviderId": ""}
        path = f"{USERS}/{_seg(user_id)}/rights"
        answer = await self._call("POST", path, what="grant rights", json=body)
        return list(answer.get("newlyGrantedRights") or [])

    # --- health -------------------------------------------------------------------------

    async def version(self) -> str:
        """The participant's Ledger API version; one attempt, for health checks."""
        answer = await self._once("GET", VERSION, json=None, params=None)
        return str(answer["version"])

    async def livez(self) -> bool:
        """Whether the participant says it is alive; one attempt, never raises."""
        try:
            await self._once("GET", LIVEZ, json=None, params=None)
        except (httpx.TransportError, CantonError):
            return False
        return True

    # --- transport ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        attempts = max(1, self._settings.http_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await self._once(method, path, json=json, params=params)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failure: BaseException = exc
            except CantonError as err:
                if not err.is_transient:
                    raise
                failure = err
            log.warning("canton %s attempt %d/%d failed: %r", what, attempt, attempts, failure)
            if attempt == attempts:
                raise unavailable(what, failure) from failure
            await self._sleep(self._settings.backoff(attempt))
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, *, json: Any, params: dict[str, str | int] | None
    ) -> Any:
        headers = {"Authorization": self.tokens.authorization()}
        response = await self._http.request(method, path, json=json, params=params, headers=headers)
        if response.is_success:
            return response.json() if response.content else None
        raise CantonError.from_body(response.status_code, response.content)


def _seg(value: str) -> str:
    return quote(value, safe="")
