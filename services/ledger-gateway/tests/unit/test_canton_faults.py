"""CantonLedgerBackend under injected faults: duplicates, contention, 5xx, timeouts.

The fake participant validates every request and answer against the OpenAPI spec.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from p2e_kit.errors import Conflict, DependencyUnavailable
from p2e_ledger_gateway.canton import CantonLedgerBackend
from p2e_ledger_gateway.canton.testing import (
    FakeParticipant,
    SpecServer,
    fake_settings,
    make_backend,
)

SUBMIT = "/v2/commands/submit-and-wait-for-transaction"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def backend(server: SpecServer, sleeps: list[float]) -> AsyncIterator[CantonLedgerBackend]:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = fake_settings(backoff_min_seconds=0.1, backoff_max_seconds=0.3)
    backend = make_backend(server, settings=settings, sleep=sleep)
    await backend.init_wallets(["alice", "bob"], Decimal("100"))
    sleeps.clear()
    yield backend
    await backend.aclose()


async def balances(backend: CantonLedgerBackend) -> dict[str, Decimal]:
    return {w.agent_id: w.balance for w in await backend.list_wallets()}


def submit_answers(server: SpecServer) -> list[tuple[int, str]]:
    return [(status, code) for path, status, code in server.answers if path == SUBMIT]


async def test_duplicate_command_is_answered_by_a_replay(
    backend: CantonLedgerBackend, server: SpecServer, sleeps: list[float]
) -> None:
    # A twin submission of the same command won: Canton answers DUPLICATE_COMMAND.
    server.faults.duplicates = 1
    result = await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert result.replayed is True
    assert submit_answers(server)[-1] == (409, "DUPLICATE_COMMAND")
    assert sleeps == []  # the record is read back at once, no backoff
    assert await balances(backend) == {"alice": Decimal("93"), "bob": Decimal("107")}
    again = await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")
    assert (again.replayed, again.id) == (True, result.id)


async def test_lost_answer_is_resubmitted_deduplicated_and_replayed(
    backend: CantonLedgerBackend, server: SpecServer, sleeps: list[float]
) -> None:
    # The transfer commits but its answer times out; the retry carries the same commandId.
    server.faults.lost_submits = 1
    result = await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert result.replayed is True
    first, second = server.submits()[-2:]
    assert first == second
    assert submit_answers(server)[-2:] == [(200, ""), (409, "DUPLICATE_COMMAND")]
    assert sleeps == [0.1]  # the HTTP retry's backoff only
    assert await balances(backend) == {"alice": Decimal("93"), "bob": Decimal("107")}


async def test_contention_is_retried_with_backoff(
    backend: CantonLedgerBackend, server: SpecServer, sleeps: list[float]
) -> None:
    server.faults.contention = 2
    result = await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert result.replayed is False
    assert submit_answers(server)[-3:] == [
        (409, "LOCAL_VERDICT_LOCKED_CONTRACTS"),
        (409, "LOCAL_VERDICT_LOCKED_CONTRACTS"),
        (200, ""),
    ]
    assert sleeps == [0.1, 0.2]
    assert await balances(backend) == {"alice": Decimal("93"), "bob": Decimal("107")}


async def test_contention_exhausted_is_conflict_and_moves_nothing(
    backend: CantonLedgerBackend, server: SpecServer, sleeps: list[float]
) -> None:
    server.faults.contention = 10
    submits = len(server.submits())
    with pytest.raises(Conflict) as caught:
        await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert caught.value.reason == "LEDGER_CONTENTION"
    assert len(server.submits()) - submits == 3
    assert sleeps == [0.1, 0.2]
    assert await balances(backend) == {"alice": Decimal("100"), "bob": Decimal("100")}


async def test_wallet_changed_between_read_and_submit_is_retried(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    # Another writer credits bob after the adapter read bob's contract id: that id is stale.
    def concurrent_credit(participant: FakeParticipant, body: dict[str, Any]) -> None:
        server.faults.before_submit = None
        recipient = body["commands"]["commands"][0]["ExerciseCommand"]["choiceArgument"]
        credit = {
            "ExerciseCommand": {
                "templateId": "#p2engine-wallet:Wallet:Wallet",
                "contractId": recipient["recipientCid"],
                "choice": "Credit",
                "choiceArgument": {"amount": "5"},
            }
        }
        commands = {**body["commands"], "commands": [credit], "commandId": "other-writer"}
        participant.submit({"commands": commands}, "p2engine")

    server.faults.before_submit = concurrent_credit
    await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert [code for _, code in submit_answers(server)][-2:] == ["CONTRACT_NOT_FOUND", ""]
    assert await balances(backend) == {"alice": Decimal("93"), "bob": Decimal("112")}


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried_then_succeed(
    backend: CantonLedgerBackend, server: SpecServer, sleeps: list[float], status: int
) -> None:
    server.faults.server_errors = 2
    server.faults.server_error_status = status
    server.faults.path_prefix = SUBMIT
    result = await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert result.replayed is False
    assert [s for s, _ in submit_answers(server)][-3:] == [status, status, 200]
    assert sleeps == [0.1, 0.2]


async def test_server_errors_exhausted_are_dependency_unavailable(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    server.faults.server_errors = 100
    submits = len(server.submits())
    with pytest.raises(DependencyUnavailable) as caught:
        await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")
    assert caught.value.reason == "CANTON_UNAVAILABLE"
    assert len(server.submits()) == submits  # the first read already failed 3 times

    server.faults.server_errors = 0
    assert await balances(backend) == {"alice": Decimal("100"), "bob": Decimal("100")}


async def test_submit_timeouts_are_retried_with_the_same_command(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    server.faults.timeouts = 2
    server.faults.path_prefix = SUBMIT
    result = await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert result.replayed is False
    bodies = server.submits()[-3:]
    assert bodies[0] == bodies[1] == bodies[2]
    assert await balances(backend) == {"alice": Decimal("93"), "bob": Decimal("107")}


async def test_timeouts_exhausted_are_dependency_unavailable(
    backend: CantonLedgerBackend, server: SpecServer, sleeps: list[float]
) -> None:
    server.faults.timeouts = 3
    server.faults.path_prefix = SUBMIT
    submits = len(server.submits())
    with pytest.raises(DependencyUnavailable) as caught:
        await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")

    assert "timed out" in caught.value.message
    assert len(server.submits()) - submits == 3
    assert sleeps == [0.1, 0.2]
    # The caller retries later with the same request_id: it settles exactly once.
    await backend.transfer("alice", "bob", Decimal("7"), "x", "req-1")
    assert await balances(backend) == {"alice": Decimal("93"), "bob": Decimal("107")}


async def test_health_reports_version_and_outage(
    backend: CantonLedgerBackend, server: SpecServer
) -> None:
    healthy = await backend.health()
    assert (healthy.connected, healthy.version) == (True, "3.5.10-SNAPSHOT")
    assert healthy.endpoint == "http://canton.test:7575"
    assert await backend.client.livez() is True

    server.faults.server_errors = 1
    down = await backend.health()
    assert down.connected is False
    assert "SERVICE_NOT_RUNNING" in down.error
    server.faults.timeouts = 1
    assert (await backend.health()).connected is False
    server.faults.server_errors = 1
    assert await backend.client.livez() is False
