"""The judge itself: SpecServer rejects whatever breaks the Canton JSON Ledger API spec."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from p2e_ledger_gateway.canton.testing import (
    FAKE_URL,
    CantonSpec,
    SpecServer,
    SpecViolation,
    make_backend,
)

AUTH = {"Authorization": "Bearer x.y."}


def good_submit() -> dict[str, Any]:
    return {
        "commands": {
            "commands": [
                {
                    "CreateCommand": {
                        "templateId": "#p2engine-wallet:Wallet:Wallet",
                        "createArguments": {},
                    }
                }
            ],
            "commandId": "c1",
            "actAs": ["nobody::1220"],
        }
    }


async def send(server: SpecServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=FAKE_URL, transport=server.transport()) as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "why"),
    [
        ("GET", "/v2/state/ledger-end", {}, "Security"),
        ("GET", "/v2/no-such-endpoint", {"headers": AUTH}, "not found"),
        (
            "POST",
            "/v2/state/active-contracts",
            {"headers": AUTH, "json": {"activeAtOffset": "3"}},
            "not of type 'integer'",
        ),
        (
            "POST",
            "/v2/commands/submit-and-wait-for-transaction",
            {"headers": AUTH, "json": {"commands": {"commandId": "c", "actAs": []}}},
            "commands",
        ),
        (
            "POST",
            "/v2/commands/submit-and-wait-for-transaction",
            {"headers": AUTH, "json": good_submit() | {"transactionFormat": {"shape": "X"}}},
            "transactionFormat",
        ),
    ],
    ids=["no-token", "unknown-path", "ill-typed", "missing-required", "bad-nested"],
)
async def test_requests_breaking_the_spec_fail_the_test(
    spec: CantonSpec, method: str, path: str, kwargs: dict[str, Any], why: str
) -> None:
    server = SpecServer(spec=spec)
    with pytest.raises(SpecViolation, match=why):
        await send(server, method, path, **kwargs)
    assert len(server.violations) == 1


async def test_undeclared_fields_fail_like_canton_rejects_them(spec: CantonSpec) -> None:
    body = good_submit()
    body["commands"]["commandID"] = "typo"
    server = SpecServer(spec=spec)
    with pytest.raises(SpecViolation, match=r"\$\.commands\.commandID"):
        await send(
            server, "POST", "/v2/commands/submit-and-wait-for-transaction", headers=AUTH, json=body
        )


async def test_undeclared_fields_inside_one_of_wrappers_are_found(spec: CantonSpec) -> None:
    body = good_submit()
    body["commands"]["commands"][0]["CreateCommand"]["contractId"] = "00ab"
    unknown = spec.unknown_fields(
        spec.request_schema("POST", "/v2/commands/submit-and-wait-for-transaction") or {}, body
    )
    assert unknown == ["$.commands.commands[0].CreateCommand.contractId"]


async def test_a_broken_fake_answer_fails_the_test(spec: CantonSpec) -> None:
    server = SpecServer(spec=spec)
    server.participant.ledger_end = lambda: {"offset": "3"}  # type: ignore[method-assign]
    with pytest.raises(SpecViolation, match="answer 200"):
        await send(server, "GET", "/v2/state/ledger-end", headers=AUTH)


@pytest.mark.parametrize("json_400", [False, True])
async def test_refusals_are_js_canton_errors(spec: CantonSpec, json_400: bool) -> None:
    server = SpecServer(spec=spec, json_400=json_400)
    response = await send(
        server,
        "POST",
        "/v2/commands/submit-and-wait-for-transaction",
        headers=AUTH,
        json=good_submit(),
    )
    assert response.status_code == 403  # actAs a party the participant does not know
    body = json.loads(response.content)
    spec.validate_schema("JsCantonError", body)
    assert body["code"] == "PERMISSION_DENIED"

    server.participant.allocate_party({"partyIdHint": "nobody"})
    party = next(iter(server.participant.parties))
    submit = good_submit()
    submit["commands"]["actAs"] = [party]
    response = await send(
        server, "POST", "/v2/commands/submit-and-wait-for-transaction", headers=AUTH, json=submit
    )
    assert response.status_code == 400
    expected = "application/json" if json_400 else "text/plain; charset=UTF-8"
    assert response.headers["content-type"] == expected
    assert json.loads(response.content)["code"] == "COMMAND_PREPROCESSING_FAILED"
    assert server.violations == []


async def test_a_whole_session_is_spec_conformant_both_ways(spec: CantonSpec) -> None:
    server = SpecServer(spec=spec)
    backend = make_backend(server)
    await backend.init_wallets(["alice", "bob"], Decimal("50"))
    await backend.transfer("alice", "bob", Decimal("0.01"), "tip", "r1")
    await backend.freeze("bob")
    await backend.list_transactions("bob")
    await backend.health()
    await backend.aclose()

    paths = {(r.method, r.url.path) for r in server.requests}
    assert paths == {
        ("GET", "/v2/parties"),
        ("POST", "/v2/parties"),
        ("GET", "/v2/users/p2engine"),
        ("POST", "/v2/users"),
        ("GET", "/v2/state/ledger-end"),
        ("POST", "/v2/state/active-contracts"),
        ("POST", "/v2/commands/submit-and-wait-for-transaction"),
        ("GET", "/v2/version"),
    }
    assert len(server.answers) == len(server.requests)
    assert server.violations == []
