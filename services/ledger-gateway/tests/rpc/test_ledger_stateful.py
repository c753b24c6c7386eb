"""Hypothesis stateful test: the ledger over gRPC against an in-memory model.

Random transfers (new and retried request_ids, a request_id reused with other parameters,
bad amounts, self-transfers), wallets initialised again, freezes and thaws; after every step
the served balances must equal the model's, nothing is negative, supply equals what was
minted, each wallet's history is the model's (every request_id recorded once, with its
outcome, newest first) and the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from p2e_kit.channels import caller_metadata
from p2e_kit.status import decode
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2_grpc
from p2engine.ledger.v1 import ledger_service_pb2 as pb

OPERATOR = caller_metadata("operator", "model")
_examples = itertools.count()


@dataclass(frozen=True)
class Sent:
    to: str
    cents: int
    outcome: str  # "SETTLED" or the FAILED_PRECONDITION reason


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class LedgerModel(RuleBasedStateMachine):
    stub: ledger_service_pb2_grpc.LedgerServiceStub

    def __init__(self) -> None:
        super().__init__()
        self.balances: dict[str, int] = {}
        self.frozen: set[str] = set()
        self.sent: dict[tuple[str, str], Sent] = {}
        self.recorded: list[tuple[str, str, str, int, str]] = []  # request_id, from, to, ...
        self.minted = 0

    @initialize(start=st.lists(st.integers(0, 5000), min_size=3, max_size=3))
    def create_wallets(self, start: list[int]) -> None:
        prefix = f"m{next(_examples)}"
        for n, cents in enumerate(start):
            agent = f"{prefix}_{n}"
            request = pb.InitWalletsRequest(agent_ids=[agent], initial_balance=money(cents))
            self.stub.InitWallets(request, metadata=OPERATOR)
            self.balances[agent] = cents
            self.minted += cents

    def _agent(self, index: int) -> str:
        return sorted(self.balances)[index]

    def _pay(self, payer: str, to: str, amount: str, request_id: str) -> tuple[str, bool]:
        request = pb.CreateTransferRequest(to_agent=to, amount=amount, request_id=request_id)
        try:
            transfer = self.stub.CreateTransfer(request, metadata=caller_metadata("agent", payer))
        except grpc.RpcError as exc:
            error = decode(exc)
            return f"{error.code}/{error.reason}", error.metadata.get("replayed") == "true"
        assert transfer.status == ledger_pb2.TRANSFER_STATUS_SETTLED
        return "SETTLED", transfer.replayed

    def _expect(self, payer: str, to: str, cents: int, request_id: str) -> tuple[str, bool]:
        if payer == to:
            return "INVALID_ARGUMENT/SELF_TRANSFER", False
        known = self.sent.get((payer, request_id))
        if known is not None:
            if (known.to, known.cents) != (to, cents):
                return "ALREADY_EXISTS/REQUEST_ID_REUSED", False
            return known.outcome, True
        if payer in self.frozen:
            outcome = "FAILED_PRECONDITION/WALLET_FROZEN"
        elif cents > self.balances[payer]:
            outcome = "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"
        else:
            outcome = "SETTLED"
            self.balances[payer] -= cents
            self.balances[to] += cents
        self.sent[(payer, request_id)] = Sent(to, cents, outcome)
        self.recorded.append((request_id, payer, to, cents, outcome))
        return outcome, False

    @rule(
        payer=st.integers(0, 2),
        to=st.integers(0, 2),
        cents=st.integers(1, 6000),
        request_id=st.sampled_from(["r1", "r2", "r3", "r4", "r5", "r6"]),
    )
    def transfer(self, payer: int, to: int, cents: int, request_id: str) -> None:
        payer_id, to_id = self._agent(payer), self._agent(to)
        expected = self._expect(payer_id, to_id, cents, request_id)
        assert self._pay(payer_id, to_id, money(cents), request_id) == expected

    @rule(payer=st.integers(0, 2), data=st.data())
    @precondition(lambda self: bool(self.sent))
    def retry(self, payer: int, data: st.DataObject) -> None:
        """Re-send exactly an earlier request: always the first answer, marked replayed."""
        (payer_id, request_id), sent = data.draw(st.sampled_from(sorted(self.sent.items())))
        result = self._pay(payer_id, sent.to, money(sent.cents), request_id)
        assert result == (sent.outcome, True)

    @rule(amount=st.sampled_from(["0", "-1", "1.001", "NaN", "Infinity", "x", ""]))
    def bad_amount(self, amount: str) -> None:
        outcome, _ = self._pay(self._agent(0), self._agent(1), amount, "bad")
        assert outcome.startswith("INVALID_ARGUMENT/")

    @rule(cents=st.integers(0, 5000))
    def init_again(self, cents: int) -> None:
        """Initialising existing wallets changes nothing, whatever the balance asked."""
        request = pb.InitWalletsRequest(
            agent_ids=sorted(self.balances), initial_balance=money(cents)
        )
        response = self.stub.InitWallets(request, metadata=OPERATOR)
        assert list(response.created_agent_ids) == []
        assert [w.agent_id for w in response.wallets] == sorted(self.balances)

    @rule(index=st.integers(0, 2), freeze=st.booleans())
    def freeze(self, index: int, freeze: bool) -> None:
        agent = self._agent(index)
        if freeze:
            wallet = self.stub.FreezeWallet(
                pb.FreezeWalletRequest(agent_id=agent), metadata=OPERATOR
            )
            self.frozen.add(agent)
        else:
            request = pb.UnfreezeWalletRequest(agent_id=agent)
            wallet = self.stub.UnfreezeWallet(request, metadata=OPERATOR)
            self.frozen.discard(agent)
        assert wallet.frozen == freeze

    @invariant()
    def balances_match(self) -> None:
        if not self.balances:
            return
        served = {}
        for agent in self.balances:
            wallet = self.stub.GetBalance(pb.GetBalanceRequest(agent_id=agent))
            served[agent] = int(wallet.balance.amount.replace(".", ""))
        assert served == self.balances
        assert min(served.values()) >= 0
        assert sum(served.values()) == self.minted

    @invariant()
    def history_matches(self) -> None:
        for agent in self.balances:
            served = []
            token = ""
            while True:
                request = pb.ListTransactionsRequest(
                    agent_id=agent, page_size=500, page_token=token
                )
                page = self.stub.ListTransactions(request)
                for t in page.transfers:
                    outcome = (
                        "SETTLED"
                        if t.status == ledger_pb2.TRANSFER_STATUS_SETTLED
                        else f"FAILED_PRECONDITION/{t.failure_reason}"
                    )
                    cents = int(t.amount.amount.replace(".", ""))
                    served.append((t.request_id, t.from_agent, t.to_agent, cents, outcome))
                token = page.next_page_token
                if not token:
                    break
            mine = [r for r in self.recorded if agent in (r[1], r[2])]
            assert served == mine[::-1]  # newest first, each request once

    @invariant()
    def audit_verifies(self) -> None:
        assert self.stub.VerifyAudit(pb.VerifyAuditRequest()).valid


@pytest.fixture
def served_address(make_settings, sqlite_url, serve_ledger) -> Iterator[str]:
    """The ledger served from a background event loop, for a synchronous client."""
    ready, stop_box, address_box = threading.Event(), [], []

    async def main() -> None:
        async with serve_ledger(make_settings(sqlite_url)) as harness:
            stop = asyncio.Event()
            stop_box.append((asyncio.get_running_loop(), stop))
            address_box.append(harness.address)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the ledger did not start"
    try:
        yield address_box[0]
    finally:
        loop, stop = stop_box[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_ledger_matches_model(served_address: str) -> None:
    with grpc.insecure_channel(served_address) as channel:
        LedgerModel.stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        run_state_machine_as_test(
            LedgerModel,
            settings=settings(
                max_examples=50,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
