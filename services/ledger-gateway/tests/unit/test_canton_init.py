"""Wallet initialisation, parties, users and tokens, against the spec-validating fake."""

from __future__ import annotations

from decimal import Decimal

import pytest

from p2e_kit.errors import DependencyUnavailable
from p2e_ledger_gateway.canton.auth import decode_jwt
from p2e_ledger_gateway.canton.client import can_act_as, can_read_as
from p2e_ledger_gateway.canton.contracts import command_id
from p2e_ledger_gateway.canton.testing import (
    Auth,
    CantonSpec,
    FakeParticipant,
    SpecServer,
    fake_settings,
    make_backend,
)

AUDIENCE = "https://daml.com/jwt/aud/participant/p1"


async def test_init_creates_parties_user_and_wallets_once(server: SpecServer) -> None:
    backend = make_backend(server)
    first = await backend.init_wallets(["alice", "bob", "alice"], Decimal("100.00"))

    assert first.created_agent_ids == ["alice", "bob"]
    assert [(w.agent_id, w.balance, w.frozen) for w in first.wallets] == [
        ("alice", Decimal("100"), False),
        ("bob", Decimal("100"), False),
    ]
    participant = server.participant
    issuer = first.wallets[0].issuer
    assert issuer.startswith("p2engine::")
    assert {w.owner.split("::")[0] for w in first.wallets} == {"p2e-agent-alice", "p2e-agent-bob"}
    assert len(participant.parties) == 3
    assert participant.users["p2engine"]["primaryParty"] == issuer
    assert participant.rights["p2engine"] == [can_act_as(issuer), can_read_as(issuer)]
    assert [s["commands"]["commandId"] for s in server.submits()] == [
        command_id("init", issuer, "alice"),
        command_id("init", issuer, "bob"),
    ]

    again = await backend.init_wallets(["alice", "bob"], Decimal("5"))
    assert again.created_agent_ids == []
    assert [w.balance for w in again.wallets] == [Decimal("100"), Decimal("100")]
    more = await backend.init_wallets(["bob", "carol"], Decimal("7"))
    assert more.created_agent_ids == ["carol"]
    assert [(w.agent_id, w.balance) for w in more.wallets] == [
        ("bob", Decimal("100")),
        ("carol", Decimal("7")),
    ]
    assert len(server.submits()) == 3
    assert len(participant.parties) == 4
    await backend.aclose()


async def test_restarted_gateway_finds_the_same_parties_and_wallets(server: SpecServer) -> None:
    first = make_backend(server)
    await first.init_wallets(["alice"], Decimal("10"))
    await first.aclose()

    second = make_backend(server)
    result = await second.init_wallets(["alice"], Decimal("10"))
    assert result.created_agent_ids == []
    assert len(server.participant.parties) == 2
    assert len(server.submits()) == 1
    assert [g for g in server.participant.rights["p2engine"]] == [
        can_act_as(result.wallets[0].issuer),
        can_read_as(result.wallets[0].issuer),
    ]
    await second.aclose()


async def test_lost_init_answer_creates_no_second_wallet(server: SpecServer) -> None:
    backend = make_backend(server)
    server.faults.lost_submits = 1
    result = await backend.init_wallets(["alice"], Decimal("10"))

    assert result.created_agent_ids == ["alice"]
    assert [code for path, _, code in server.answers if "commands" in path] == [
        "",
        "DUPLICATE_COMMAND",
    ]
    wallets = [c for c in server.participant.contracts.values() if c.entity == "Wallet:Wallet"]
    assert len(wallets) == 1
    await backend.aclose()


async def test_configured_issuer_party_is_used_when_it_exists(server: SpecServer) -> None:
    bank = server.participant.allocate_party({"partyIdHint": "bank"})["partyDetails"]["party"]
    backend = make_backend(server, party_id=bank)
    result = await backend.init_wallets(["alice"], Decimal("1"))

    assert result.wallets[0].issuer == bank
    assert not any(p.startswith("p2engine::") for p in server.participant.parties)
    await backend.aclose()


async def test_every_call_carries_an_audience_based_token(server: SpecServer) -> None:
    settings = fake_settings(audience=AUDIENCE, user_id="p2e-svc", hmac_secret="sandbox-secret")
    backend = make_backend(server, settings=settings)
    await backend.init_wallets(["alice", "bob"], Decimal("10"))
    await backend.transfer("alice", "bob", Decimal("1"), "x", "r1")

    assert server.requests
    for request in server.requests:
        scheme, _, token = request.headers["authorization"].partition(" ")
        assert scheme == "Bearer"
        header, claims = decode_jwt(token, b"sandbox-secret")
        assert header["alg"] == "HS256"
        assert (claims["aud"], claims["sub"]) == (AUDIENCE, "p2e-svc")
    assert {s["commands"]["userId"] for s in server.submits()} == {"p2e-svc"}
    await backend.aclose()


async def test_participant_with_authorization_accepts_our_tokens(spec: CantonSpec) -> None:
    participant = FakeParticipant(
        auth=Auth(audience=AUDIENCE, secret=b"sandbox-secret", admins={"p2engine"})
    )
    server = SpecServer(participant, spec=spec)
    settings = fake_settings(audience=AUDIENCE, hmac_secret="sandbox-secret")
    backend = make_backend(server, settings=settings)
    await backend.init_wallets(["alice", "bob"], Decimal("10"))
    result = await backend.transfer("alice", "bob", Decimal("1"), "x", "r1")

    assert result.from_balance_after == Decimal("9")
    assert server.violations == []
    await backend.aclose()


@pytest.mark.parametrize(
    ("audience", "secret"),
    [("https://daml.com/jwt/aud/participant/other", "sandbox-secret"), (AUDIENCE, "wrong")],
    ids=["wrong-audience", "wrong-secret"],
)
async def test_rejected_token_is_dependency_unavailable(
    spec: CantonSpec, audience: str, secret: str
) -> None:
    participant = FakeParticipant(auth=Auth(audience=AUDIENCE, secret=b"sandbox-secret"))
    server = SpecServer(participant, spec=spec)
    backend = make_backend(server, settings=fake_settings(audience=audience, hmac_secret=secret))

    with pytest.raises(DependencyUnavailable) as caught:
        await backend.init_wallets(["alice"], Decimal("10"))
    assert caught.value.reason == "CANTON_UNAUTHORIZED"
    assert [status for _, status, _ in server.answers] == [401]
    assert server.violations == []
    await backend.aclose()


async def test_user_without_admin_rights_moves_money_with_rights_granted_by_hand(
    spec: CantonSpec,
) -> None:
    participant = FakeParticipant(auth=Auth(audience=AUDIENCE, secret=b"k", admins={"admin"}))
    bank = participant.allocate_party({"partyIdHint": "bank"})["partyDetails"]["party"]
    server = SpecServer(participant, spec=spec)
    admin = make_backend(
        server,
        settings=fake_settings(audience=AUDIENCE, hmac_secret="k", user_id="admin"),
        party_id=bank,
    )
    await admin.init_wallets(["alice", "bob"], Decimal("3"))
    await admin.aclose()
    participant.create_user(
        {"user": {"id": "p2engine"}, "rights": [can_act_as(bank), can_read_as(bank)]}
    )
    server.answers.clear()

    backend = make_backend(
        server, settings=fake_settings(audience=AUDIENCE, hmac_secret="k"), party_id=bank
    )
    result = await backend.transfer("alice", "bob", Decimal("1"), "x", "r1")

    assert result.from_balance_after == Decimal("2")
    assert [(path, status) for path, status, _ in server.answers if status != 200] == [
        ("/v2/parties", 403),
        ("/v2/users/p2engine", 403),
    ]
    with pytest.raises(DependencyUnavailable):  # creating wallets needs admin rights
        await backend.init_wallets(["carol"], Decimal("1"))
    assert server.violations == []
    await backend.aclose()
