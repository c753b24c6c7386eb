"""CantonLedgerBackend transfers against the spec-validating fake participant.

Every request the adapter sends and every answer it parses is checked against the Canton
JSON Ledger API's OpenAPI spec by `SpecServer`; a violation fails the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from p2e_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from p2e_ledger_gateway.canton import CantonLedgerBackend
from p2e_ledger_gateway.canton.contracts import transfer_command_id
from p2e_ledger_gateway.canton.testing import CantonSpec, SpecServer, make_backend


@pytest.fixture
async def backend(server: SpecServer) -> AsyncIterator[CantonLedgerBackend]:
    backend = make_backend(server)
    await backend.init_wallets(["alice", "bob", "carol"], Decimal("100"))
    yield backend
    await backend.aclose()


async def balances(backend: CantonLedgerBackend) -> dict[str, Decimal]:
    return {w.agent_id: w.balance for w in await backend.list_wallets()}


async def test_transfer_settles_exact_amounts_in_one_command(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    before = len(server.submits())
    result = await backend.transfer("alice", "bob", Decimal("12.50"), "lunch", "req-1")

    assert result.replayed is False
    assert result.id == transfer_command_id("alice", "req-1")
    assert (result.from_agent, result.to_agent, result.reason) == ("alice", "bob", "lunch")
    assert result.amount == Decimal("12.50")
    assert result.from_balance_after == Decimal("87.50")
    assert result.update_id
    assert await balances(backend) == {
        "alice": Decimal("87.5"),
        "bob": Decimal("112.5"),
        "carol": Decimal("100"),
    }
    (submit,) = server.submits()[before:]
    commands = submit["commands"]
    assert commands["commandId"] == transfer_command_id("alice", "req-1")
    (exercise,) = [cmd["ExerciseCommand"] for cmd in commands["commands"]]
    assert exercise["templateId"] == "#p2engine-wallet:Wallet:Wallet"
    assert exercise["choice"] == "Transfer"
    assert exercise["choiceArgument"]["amount"] == "12.50"  # a string, never a float
    assert submit["transactionFormat"]["transactionShape"] == "TRANSACTION_SHAPE_ACS_DELTA"


async def test_wallet_counts_and_history_newest_first(backend: CantonLedgerBackend) -> None:
    await backend.transfer("alice", "bob", Decimal("1"), "one", "r1")
    await backend.transfer("bob", "alice", Decimal("2"), "two", "r2")
    await backend.transfer("carol", "alice", Decimal("3"), "three", "r3")

    alice = await backend.get_balance("alice")
    assert (alice.balance, alice.sent_count, alice.received_count) == (Decimal("104"), 1, 2)
    history = await backend.list_transactions("alice")
    assert [t.request_id for t in history] == ["r3", "r2", "r1"]
    assert [t.request_id for t in await backend.list_transactions("carol")] == ["r3"]


async def test_same_request_id_replays_without_submitting_again(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    first = await backend.transfer("alice", "bob", Decimal("5"), "x", "req-1")
    submits = len(server.submits())
    again = await backend.transfer("alice", "bob", Decimal("5.00"), "x", "req-1")

    assert again.replayed is True
    assert (again.id, again.from_balance_after) == (first.id, first.from_balance_after)
    assert len(server.submits()) == submits
    assert (await balances(backend))["alice"] == Decimal("95")


async def test_request_id_is_scoped_to_the_payer(backend: CantonLedgerBackend) -> None:
    await backend.transfer("alice", "bob", Decimal("5"), "x", "shared-id")
    other = await backend.transfer("carol", "bob", Decimal("5"), "x", "shared-id")
    assert other.replayed is False
    assert (await balances(backend))["bob"] == Decimal("110")


async def test_request_id_reused_with_other_parameters_is_already_exists(
    backend: CantonLedgerBackend,
) -> None:
    await backend.transfer("alice", "bob", Decimal("5"), "x", "req-1")
    for to, amount, reason in [("carol", "5", "x"), ("bob", "6", "x"), ("bob", "5", "y")]:
        with pytest.raises(AlreadyExists) as caught:
            await backend.transfer("alice", to, Decimal(amount), reason, "req-1")
        assert caught.value.reason == "REQUEST_ID_REUSED"
    assert (await balances(backend))["alice"] == Decimal("95")


@pytest.mark.parametrize("json_400", [False, True], ids=["spec-text-400", "canton-json-400"])
async def test_insufficient_funds_is_failed_precondition(spec: CantonSpec, json_400: bool) -> None:
    server = SpecServer(spec=spec, json_400=json_400)
    backend = make_backend(server)
    await backend.init_wallets(["alice", "bob"], Decimal("10"))

    with pytest.raises(FailedPrecondition) as caught:
        await backend.transfer("alice", "bob", Decimal("10.01"), "too much", "req-1")

    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert caught.value.violations[0].type == "INSUFFICIENT_FUNDS"
    assert caught.value.violations[0].subject == "wallet:alice"
    assert caught.value.metadata["canton_code"] == "DAML_FAILURE"
    assert len(server.submits()) == 3  # two wallets, one refused transfer: no retry
    assert await balances(backend) == {"alice": Decimal("10"), "bob": Decimal("10")}
    assert await backend.list_transactions("alice") == []
    assert server.violations == []
    await backend.aclose()


async def test_frozen_wallet_refuses_debits_but_takes_credits(
    backend: CantonLedgerBackend,
) -> None:
    frozen = await backend.freeze("alice")
    assert frozen.frozen is True
    assert (await backend.freeze("alice")).contract_id == frozen.contract_id  # no-op

    with pytest.raises(FailedPrecondition) as caught:
        await backend.transfer("alice", "bob", Decimal("1"), "x", "req-1")
    assert caught.value.reason == "WALLET_FROZEN"
    await backend.transfer("bob", "alice", Decimal("1"), "x", "req-2")

    assert (await backend.unfreeze("alice")).frozen is False
    await backend.transfer("alice", "bob", Decimal("1"), "x", "req-1")
    assert await balances(backend) == {
        "alice": Decimal("100"),
        "bob": Decimal("100"),
        "carol": Decimal("100"),
    }


async def test_unknown_wallets_are_not_found_without_submitting(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    submits = len(server.submits())
    for call in (
        backend.transfer("alice", "zed", Decimal("1"), "x", "r"),
        backend.transfer("zed", "alice", Decimal("1"), "x", "r"),
        backend.get_balance("zed"),
        backend.list_transactions("zed"),
    ):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.reason == "WALLET_NOT_FOUND"
    assert len(server.submits()) == submits


@pytest.mark.parametrize(
    ("to", "amount", "request_id", "field"),
    [
        ("alice", "1", "r", "to_agent"),
        ("bob", "0", "r", "amount"),
        ("bob", "-1", "r", "amount"),
        ("bob", "NaN", "r", "amount"),
        ("bob", "0.00000000001", "r", "amount"),
        ("bob", "1", "", "request_id"),
    ],
)
async def test_bad_requests_never_reach_canton(
    backend: CantonLedgerBackend,
    server: SpecServer,
    to: str,
    amount: str,
    request_id: str,
    field: str,
) -> None:
    calls = len(server.requests)
    with pytest.raises(InvalidArgument) as caught:
        await backend.transfer("alice", to, Decimal(amount), "x", request_id)
    assert caught.value.violations[0].field == field
    assert len(server.requests) == calls
