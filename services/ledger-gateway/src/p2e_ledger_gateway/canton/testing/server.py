"""`SpecServer`: a fake Canton JSON Ledger API behind an `httpx.MockTransport`.

Every request the adapter sends is validated against the OpenAPI spec (openapi-core, plus a
check for undeclared fields, which Canton rejects) before the fake looks at it, and every
answer the fake gives is validated before the adapter sees it; JsCantonError bodies are also
checked against their schema. A violation raises `SpecViolation` out of the transport, which
fails the test, and is kept in `violations`.

Faults are switched on per test: `faults.server_errors` (next N calls get a 5xx),
`faults.timeouts` (next N calls time out before reaching the ledger), `faults.lost_submits`
(next N submissions commit, then the answer is lost), `faults.duplicates` (next N
submissions commit, but the answer is DUPLICATE_COMMAND, as when a twin submission won),
`faults.contention` (next N submissions are rejected with LOCAL_VERDICT_LOCKED_CONTRACTS),
and `faults.before_submit` (a hook that may change the ledger between read and submit).

A note on the spec: it declares HTTP 400 answers as text/plain, while Canton sends the
JsCantonError of a FAILED_PRECONDITION/INVALID_ARGUMENT as JSON with status 400. The fake
sends those as text/plain by default (spec-conformant) and as application/json with
`json_400=True` (what Canton does), validating the JsCantonError body either way.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from p2e_ledger_gateway.canton.auth import decode_jwt
from p2e_ledger_gateway.canton.testing import wallet_model as wm
from p2e_ledger_gateway.canton.testing.openapi import CantonSpec, SpecViolation, load_spec
from p2e_ledger_gateway.canton.testing.participant import VERSION, FakeParticipant
from p2e_ledger_gateway.canton.testing.wallet_model import Refusal

SUBMIT = "/v2/commands/submit-and-wait-for-transaction"
FAULT_CODES = {500: ("LEDGER_API_INTERNAL_ERROR", wm.CAT_INTERNAL)}
Handler = Callable[[FakeParticipant, "Call"], Any]


@dataclass
class Faults:
    server_errors: int = 0
    server_error_status: int = 503
    timeouts: int = 0
    lost_submits: int = 0
    duplicates: int = 0
    contention: int = 0
    # Only requests whose path starts with this get server errors / timeouts ("" = all).
    path_prefix: str = ""
    before_submit: Callable[[FakeParticipant, dict[str, Any]], None] | None = None


@dataclass
class Call:
    request: httpx.Request
    pattern: str
    path_params: dict[str, str]
    body: Any
    user: str | None


def _routes() -> dict[tuple[str, str], Handler]:
    return {
        ("GET", "/v2/version"): lambda p, c: _version(),
        ("GET", "/livez"): lambda p, c: None,
        ("GET", "/v2/state/ledger-end"): lambda p, c: p.ledger_end(),
        ("POST", "/v2/state/active-contracts"): lambda p, c: p.active_contracts(c.body, c.user),
        ("POST", SUBMIT): lambda p, c: p.submit(c.body, c.user),
        ("GET", "/v2/parties"): lambda p, c: p.list_parties(
            int(c.request.url.params.get("pageSize", "1000")),
            c.request.url.params.get("pageToken", ""),
        ),
        ("POST", "/v2/parties"): lambda p, c: p.allocate_party(c.body),
        ("GET", "/v2/users/{user-id}"): lambda p, c: p.get_user(c.path_params["user-id"]),
        ("POST", "/v2/users"): lambda p, c: p.create_user(c.body),
        ("GET", "/v2/users/{user-id}/rights"): lambda p, c: p.list_rights(c.path_params["user-id"]),
        ("POST", "/v2/users/{user-id}/rights"): lambda p, c: p.grant_rights(
            c.path_params["user-id"], c.body
        ),
    }


ADMIN_PATTERNS = {"/v2/parties", "/v2/users", "/v2/users/{user-id}", "/v2/users/{user-id}/rights"}


class SpecServer:
    """The fake participant's HTTP face; use `transport()` as the adapter's httpx transport."""

    def __init__(
        self,
        participant: FakeParticipant | None = None,
        *,
        spec: CantonSpec | None = None,
        json_400: bool = False,
    ) -> None:
        self.participant = participant or FakeParticipant()
        self.spec = spec or load_spec()
        self.json_400 = json_400
        self.faults = Faults()
        self.requests: list[httpx.Request] = []
        self.violations: list[str] = []
        self.answers: list[tuple[str, int, str]] = []
        self._routes = _routes()
        self._correlation = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def submits(self) -> list[dict[str, Any]]:
        """Bodies of every submission received, in order."""
        return [json.loads(r.content) for r in self.requests if r.url.path == SUBMIT]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self._check(lambda: self._check_request(request))
        faults = self.faults
        if self._faulty(request) and faults.timeouts > 0:
            faults.timeouts -= 1
            raise httpx.ReadTimeout("fault: the call timed out", request=request)
        if self._faulty(request) and faults.server_errors > 0:
            faults.server_errors -= 1
            status = faults.server_error_status
            code, category = FAULT_CODES.get(status, ("SERVICE_NOT_RUNNING", wm.CAT_TRANSIENT))
            response = self._refusal(request, Refusal(code, category, "fault"), status=status)
        else:
            response = self._serve(request)
        self._check(lambda: self._check_response(request, response))
        self.answers.append((request.url.path, response.status_code, _code_of(response)))
        if request.url.path == SUBMIT and response.is_success and faults.lost_submits > 0:
            faults.lost_submits -= 1
            raise httpx.ReadTimeout("fault: the answer was lost", request=request)
        return response

    def _serve(self, request: httpx.Request) -> httpx.Response:
        pattern, params = self._match(request)
        body = json.loads(request.content) if request.content else None
        call = Call(request, pattern, params, body, self._user_of(request))
        try:
            self._authorize(call)
            if pattern == SUBMIT:
                self._submit_faults(call)
            result = self._routes[(request.method, pattern)](self.participant, call)
        except Refusal as refusal:
            return self._refusal(request, refusal)
        if result is None:
            return httpx.Response(200, request=request)
        return httpx.Response(200, json=result, request=request)

    def _submit_faults(self, call: Call) -> None:
        faults = self.faults
        if faults.contention > 0:
            faults.contention -= 1
            raise Refusal(
                "LOCAL_VERDICT_LOCKED_CONTRACTS",
                wm.CAT_CONTENTION,
                "Rejected transaction is referring to locked contracts",
            )
        if faults.before_submit is not None:
            faults.before_submit(self.participant, call.body)
        if faults.duplicates > 0:
            faults.duplicates -= 1
            self.participant.submit(call.body, call.user)
            self.participant.submit(call.body, call.user)  # raises DUPLICATE_COMMAND

    def _authorize(self, call: Call) -> None:
        auth = self.participant.auth
        if auth is None:
            return
        token = call.request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            _, claims = decode_jwt(token, auth.secret)
        except ValueError as exc:
            raise Refusal("UNAUTHENTICATED", wm.CAT_UNAUTHENTICATED, str(exc)) from exc
        aud = claims.get("aud")
        audiences: list[Any] = aud if isinstance(aud, list) else [aud]
        if auth.audience not in audiences or not claims.get("sub"):
            raise Refusal("UNAUTHENTICATED", wm.CAT_UNAUTHENTICATED, "wrong audience or no sub")
        if float(claims.get("exp", "inf")) < time.time():
            raise Refusal("UNAUTHENTICATED", wm.CAT_UNAUTHENTICATED, "the token expired")
        if call.pattern in ADMIN_PATTERNS and not self.participant.is_admin(call.user):
            raise Refusal("PERMISSION_DENIED", wm.CAT_PERMISSION, "needs participant admin")

    def _refusal(
        self, request: httpx.Request, refusal: Refusal, *, status: int | None = None
    ) -> httpx.Response:
        self._correlation += 1
        body = refusal.body(f"fake-{self._correlation:06d}")
        status = status or refusal.http_status
        if status == 400 and not self.json_400:
            content, media = json.dumps(body), "text/plain; charset=UTF-8"
        else:
            content, media = json.dumps(body), "application/json"
        headers = {"content-type": media}
        return httpx.Response(status, content=content.encode(), headers=headers, request=request)

    # --- validation ---------------------------------------------------------------------

    def _check(self, check: Callable[[], None]) -> None:
        try:
            check()
        except SpecViolation as violation:
            self.violations.append(str(violation))
            raise

    def _check_request(self, request: httpx.Request) -> None:
        self.spec.validate_request(request)
        pattern, _ = self._match(request)
        schema = self.spec.request_schema(request.method, pattern)
        if schema is not None and request.content:
            unknown = self.spec.unknown_fields(schema, json.loads(request.content))
            if unknown:
                raise SpecViolation(f"{request.method} {pattern}: undeclared fields {unknown}")

    def _check_response(self, request: httpx.Request, response: httpx.Response) -> None:
        is_json_400 = response.status_code == 400 and "json" in response.headers["content-type"]
        if not is_json_400:
            self.spec.validate_response(request, response)
        if response.status_code >= 400:
            self.spec.validate_schema("JsCantonError", json.loads(response.content))

    def _match(self, request: httpx.Request) -> tuple[str, dict[str, str]]:
        for method, pattern in self._routes:
            regex = "^" + re.sub(r"\{[^}]+\}", "([^/]+)", pattern) + "$"
            found = re.match(regex, request.url.path)
            if method == request.method and found:
                names = re.findall(r"\{([^}]+)\}", pattern)
                return pattern, dict(zip(names, found.groups(), strict=True))
        raise AssertionError(f"the fake does not serve {request.method} {request.url.path}")

    def _faulty(self, request: httpx.Request) -> bool:
        return request.url.path.startswith(self.faults.path_prefix)

    def _user_of(self, request: httpx.Request) -> str | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            return str(decode_jwt(token)[1].get("sub") or "") or None
        except (ValueError, KeyError):
            return None


def _version() -> dict[str, Any]:
    return {
        "version": VERSION,
        "features": {
            "experimental": {},
            "userManagement": {
                "supported": True,
                "maxRightsPerUser": 1000,
                "maxUsersPageSize": 1000,
            },
            "partyManagement": {"maxPartiesPageSize": 10000},
            "offsetCheckpoint": {"maxOffsetCheckpointEmissionDelay": {"seconds": 1, "nanos": 0}},
            "packageFeature": {"maxVettedPackagesPageSize": 100},
        },
    }


def _code_of(response: httpx.Response) -> str:
    if response.is_success:
        return ""
    try:
        return str(json.loads(response.content).get("code", ""))
    except ValueError:
        return ""
