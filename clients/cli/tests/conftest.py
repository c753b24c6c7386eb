"""Fixtures of the CLI tests.

- `isolated_env`: every P2E_* address, port, the NATS URL and the data folder point at free
  ports / a temp folder, so no test ever touches a stack the developer runs.
- `fake_services`: in-memory LedgerService, AgentService, ConversationService and
  ArtifactService (real gRPC servers on 127.0.0.1, served by the kit with its error mapping)
  in a background thread; the CLI commands run against them in-process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from p2e_cli import endpoints
from p2e_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from p2e_kit.grpc_server import Registration
from p2e_kit.service import grpc_serving
from p2e_kit.stackenv import isolated_stack_env
from p2engine.artifacts.v1 import artifacts_pb2, artifacts_service_pb2, artifacts_service_pb2_grpc
from p2engine.common.v1 import common_pb2
from p2engine.evaluator.v1 import evaluator_pb2, evaluator_service_pb2, evaluator_service_pb2_grpc
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2, ledger_service_pb2_grpc
from p2engine.orchestrator.v1 import (
    orchestrator_pb2,
    orchestrator_service_pb2,
    orchestrator_service_pb2_grpc,
)

AGENTS = ("agent_alpha", "agent_beta", "treasurer")
STATE = orchestrator_pb2


def caller_of(context: Any) -> str:
    return dict(context.invocation_metadata()).get("p2e-caller", "")


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Free ports for everything; returns the variables set."""
    env = isolated_stack_env(tmp_path / "data", tmp_path / "config")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("USER", "tester")
    monkeypatch.delenv("COLUMNS", raising=False)
    return env


# --- in-memory services ----------------------------------------------------------------------


class FakeLedger(ledger_service_pb2_grpc.LedgerServiceServicer):
    def __init__(self) -> None:
        self.balances: dict[str, Decimal] = {}
        self.transfers: list[ledger_pb2.Transfer] = []
        self.callers: list[str] = []
        self.requests: list[Any] = []

    def _wallet(self, agent: str) -> ledger_pb2.Wallet:
        if agent not in self.balances:
            raise NotFound(f"wallet {agent!r} does not exist")
        amount = common_pb2.Money(amount=f"{self.balances[agent]:.2f}", asset="P2E")
        return ledger_pb2.Wallet(agent_id=agent, balance=amount)

    async def InitWallets(self, request: Any, context: Any) -> Any:
        self.callers.append(caller_of(context))
        start = Decimal(request.initial_balance or "100")
        created = []
        for agent in request.agent_ids or AGENTS:
            if agent not in self.balances:
                self.balances[agent] = start
                created.append(agent)
        wallets = [self._wallet(a) for a in request.agent_ids or AGENTS]
        return ledger_service_pb2.InitWalletsResponse(wallets=wallets, created_agent_ids=created)

    async def GetBalance(self, request: Any, context: Any) -> Any:
        self.callers.append(caller_of(context))
        return self._wallet(request.agent_id)

    async def CreateTransfer(self, request: Any, context: Any) -> Any:
        self.callers.append(caller_of(context))
        self.requests.append(request)
        payer, payee = self._wallet(request.from_agent), self._wallet(request.to_agent)
        amount = Decimal(request.amount)
        if amount <= 0:
            raise InvalidArgument("amount must be positive", field="amount")
        if self.balances[payer.agent_id] < amount:
            raise FailedPrecondition(
                f"insufficient funds: {payer.agent_id} has {payer.balance.amount} P2E, "
                f"needs {amount:.2f}",
                reason="INSUFFICIENT_FUNDS",
            )
        self.balances[payer.agent_id] -= amount
        self.balances[payee.agent_id] += amount
        transfer = ledger_pb2.Transfer(
            id=f"tr_{len(self.transfers) + 1}",
            request_id=request.request_id,
            from_agent=payer.agent_id,
            to_agent=payee.agent_id,
            amount=common_pb2.Money(amount=f"{amount:.2f}", asset="P2E"),
            reason=request.reason,
            status=ledger_pb2.TRANSFER_STATUS_SETTLED,
            initiated_by=caller_of(context),
            from_balance_after=self._wallet(payer.agent_id).balance,
        )
        self.transfers.append(transfer)
        return transfer

    async def ListTransactions(self, request: Any, context: Any) -> Any:
        self._wallet(request.agent_id)
        mine = [t for t in self.transfers if request.agent_id in (t.from_agent, t.to_agent)]
        mine = list(reversed(mine))[: request.page_size or 20]
        return ledger_service_pb2.ListTransactionsResponse(transfers=mine)

    async def GetOverview(self, request: Any, context: Any) -> Any:
        wallets = [self._wallet(a) for a in sorted(self.balances)]
        return ledger_service_pb2.GetOverviewResponse(wallets=wallets)

    async def GetMetrics(self, request: Any, context: Any) -> Any:
        total = common_pb2.Money(
            amount=f"{sum(self.balances.values(), Decimal(0)):.2f}", asset="P2E"
        )
        return ledger_service_pb2.GetMetricsResponse(
            total_supply=total,
            total_minted=total,
            transaction_count=len(self.transfers),
            wallet_count=len(self.balances),
        )

    async def ListAuditEvents(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        event = ledger_pb2.AuditEvent(
            sequence=1, event_type="wallet_created", actor="operator:tester", hash="ab" * 32
        )
        return ledger_service_pb2.ListAuditEventsResponse(events=[event])

    async def VerifyAudit(self, request: Any, context: Any) -> Any:
        return ledger_service_pb2.VerifyAuditResponse(valid=True, checked=1)


class FakeAgents(orchestrator_service_pb2_grpc.AgentServiceServicer):
    async def ListAgents(self, request: Any, context: Any) -> Any:
        agents = [
            orchestrator_pb2.Agent(
                id=a, type="llm", llm_model="openai/gpt-4o", effective_model="offline/p2e"
            )
            for a in AGENTS
        ]
        return orchestrator_service_pb2.ListAgentsResponse(agents=agents)


@dataclass
class FakeConversation:
    conversation: orchestrator_pb2.Conversation
    states: list[orchestrator_pb2.InteractionState] = field(default_factory=list)


class FakeConversations(orchestrator_service_pb2_grpc.ConversationServiceServicer):
    """Answers "balance" with a check_balance tool call, "ask" with a question (the next
    message must come through RespondToUser), anything else with an echo."""

    def __init__(self) -> None:
        self.conversations: dict[str, FakeConversation] = {}
        self.calls: list[str] = []

    def _find(self, key: str) -> FakeConversation:
        for entry in self.conversations.values():
            if key in (entry.conversation.id, entry.conversation.name):
                return entry
        raise NotFound(f"conversation {key!r} does not exist")

    async def CreateConversation(self, request: Any, context: Any) -> Any:
        if request.agent_id not in AGENTS:
            raise NotFound(f"agent {request.agent_id!r} does not exist")
        if request.name and any(
            c.conversation.name == request.name for c in self.conversations.values()
        ):
            raise AlreadyExists(f"conversation {request.name!r} already exists")
        cid = f"conv_{len(self.conversations) + 1}"
        conversation = orchestrator_pb2.Conversation(
            id=cid,
            name=request.name or cid,
            agent_id=request.agent_id,
            state=orchestrator_pb2.CONVERSATION_STATE_IDLE,
        )
        self.conversations[cid] = FakeConversation(conversation)
        return conversation

    async def GetConversation(self, request: Any, context: Any) -> Any:
        return self._find(request.conversation).conversation

    def _append(self, entry: FakeConversation, kind: int, **fields: Any) -> Any:
        state = orchestrator_pb2.InteractionState(
            id=f"st_{len(entry.states) + 1}",
            conversation_id=entry.conversation.id,
            seq=len(entry.states) + 1,
            agent_id=entry.conversation.agent_id,
            kind=kind,  # type: ignore[arg-type]
            **fields,
        )
        entry.states.append(state)
        return orchestrator_service_pb2.SendMessageResponse(state=state)

    async def SendMessage(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.calls.append(f"send:{request.text}")
        entry = self._find(request.conversation)
        if not request.text.strip() or request.text == "fail":
            raise FailedPrecondition("a turn is already running")
        yield self._append(entry, STATE.STATE_KIND_USER_MESSAGE, text=request.text)
        async for event in self._answer(entry, request.text):
            yield event

    async def RespondToUser(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.calls.append(f"respond:{request.text}")
        entry = self._find(request.conversation)
        yield self._append(entry, STATE.STATE_KIND_USER_INPUT_RESPONSE, text=request.text)
        yield self._append(entry, STATE.STATE_KIND_ASSISTANT_MESSAGE, text=f"Noted: {request.text}")
        yield orchestrator_service_pb2.SendMessageResponse(
            finished=orchestrator_service_pb2.TurnFinished(text=f"Noted: {request.text}")
        )

    async def _answer(self, entry: FakeConversation, text: str) -> AsyncIterator[Any]:
        if "balance" in text.lower():
            yield self._append(
                entry, STATE.STATE_KIND_TOOL_CALL, target="check_balance", data_json="{}"
            )
            yield self._append(
                entry,
                STATE.STATE_KIND_TOOL_RESULT,
                target="check_balance",
                data_json='{"balance": "100.00", "asset": "P2E"}',
            )
            answer = "Your balance is 100.00 P2E."
        elif text.lower().startswith("ask"):
            yield self._append(entry, STATE.STATE_KIND_USER_INPUT_REQUEST, text="How much?")
            yield orchestrator_service_pb2.SendMessageResponse(
                finished=orchestrator_service_pb2.TurnFinished(waiting_for_user=True)
            )
            return
        else:
            answer = f"You said: {text}"
        yield self._append(entry, STATE.STATE_KIND_ASSISTANT_MESSAGE, text=answer)
        yield orchestrator_service_pb2.SendMessageResponse(
            finished=orchestrator_service_pb2.TurnFinished(text=answer, model_calls=1)
        )

    async def GetStack(self, request: Any, context: Any) -> Any:
        entry = self._find(request.conversation)
        branch = orchestrator_pb2.Branch(
            id="br_1", name="main", active=True, head_seq=len(entry.states)
        )
        return orchestrator_service_pb2.GetStackResponse(branch=branch, states=entry.states)

    async def WatchConversation(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for state in self._find(request.conversation).states:
            if state.seq > request.after_seq:
                yield state

    async def ListBranches(self, request: Any, context: Any) -> Any:
        entry = self._find(request.conversation)
        main = orchestrator_pb2.Branch(id="br_1", name="main", head_seq=len(entry.states))
        return orchestrator_service_pb2.ListBranchesResponse(branches=[main])

    async def Rewind(self, request: Any, context: Any) -> Any:
        self.calls.append(f"rewind:{request.seq}:{request.new_branch}:{request.branch_name}")
        entry = self._find(request.conversation)
        if request.seq > len(entry.states):
            raise InvalidArgument(f"seq {request.seq} is beyond the head", field="seq")
        return orchestrator_pb2.Branch(
            id="br_2",
            name=request.branch_name or f"rewind-{request.seq}",
            parent_branch_id="br_1",
            fork_seq=request.seq,
            head_seq=request.seq,
            active=True,
        )

    async def Checkout(self, request: Any, context: Any) -> Any:
        self.calls.append(f"checkout:{request.branch}")
        return orchestrator_pb2.Branch(id="br_1", name=request.branch, active=True)

    async def GetOverrides(self, request: Any, context: Any) -> Any:
        self._find(request.conversation)
        return orchestrator_pb2.Overrides()

    async def SetOverrides(self, request: Any, context: Any) -> Any:
        raise Unimplemented("overrides arrive with the configuration feature")


class FakeArtifacts(artifacts_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, conversations: FakeConversations) -> None:
        self.conversations = conversations

    async def ListArtifacts(self, request: Any, context: Any) -> Any:
        entry = self.conversations.conversations.get(request.conversation_id)
        states = entry.states if entry else []
        artifacts = [
            artifacts_pb2.Artifact(
                id=s.id,
                kind=orchestrator_pb2.StateKind.Name(s.kind).removeprefix("STATE_KIND_").lower(),
                conversation_id=s.conversation_id,
                produced_by="orchestrator",
                content_type="application/json",
                payload=f'{{"text": "{s.text}"}}'.encode(),
                sequence=s.seq,
                state_seq=s.seq,
            )
            for s in states
        ]
        page = list(reversed(artifacts)) if request.newest_first else artifacts
        return artifacts_service_pb2.ListArtifactsResponse(
            artifacts=page[: request.page_size or 50], total_size=len(artifacts)
        )


class FakeRollouts(evaluator_service_pb2_grpc.RolloutServiceServicer):
    """Two runs of one team; WatchRollout reports each, then the stream ends."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    def _runs(self, done: int) -> list[Any]:
        runs = []
        for i in range(2):
            run = evaluator_pb2.RolloutRun(
                id=f"run_{i}",
                team="weather_team",
                variant_index=i,
                variant_json=json.dumps({"tools": ["get_weather"], "temperature": 0.3 + i}),
                conversation_id=f"conv_r{i}",
                state=evaluator_pb2.ROLLOUT_STATE_SUCCEEDED
                if i < done
                else evaluator_pb2.ROLLOUT_STATE_RUNNING,
            )
            if i < done:
                run.evaluation.score = 0.5 + i / 4
                run.evaluation.metrics["score"] = 0.5 + i / 4
            runs.append(run)
        return runs

    async def StartRollout(self, request: Any, context: Any) -> Any:
        self.started.append(request)
        if "teams" not in request.config_yaml:
            raise InvalidArgument("the rollout has no teams", field="config_yaml")
        return evaluator_pb2.Rollout(
            id="ro_1", name=request.name, state=evaluator_pb2.ROLLOUT_STATE_RUNNING
        )

    async def WatchRollout(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for done in (1, 2):
            yield evaluator_service_pb2.RolloutProgress(
                run=self._runs(done)[done - 1],
                completed=done,
                total=2,
                state=evaluator_pb2.ROLLOUT_STATE_SUCCEEDED
                if done == 2
                else evaluator_pb2.ROLLOUT_STATE_RUNNING,
            )

    async def GetRollout(self, request: Any, context: Any) -> Any:
        if request.id != "ro_1":
            raise NotFound(f"rollout {request.id!r} does not exist")
        return evaluator_pb2.Rollout(
            id="ro_1", name="demo", state=evaluator_pb2.ROLLOUT_STATE_SUCCEEDED, runs=self._runs(2)
        )

    async def ListResults(self, request: Any, context: Any) -> Any:
        if request.rollout_id != "ro_1":
            raise NotFound(f"rollout {request.rollout_id!r} does not exist")
        runs = sorted(self._runs(2), key=lambda r: -r.evaluation.score)
        return evaluator_service_pb2.ListResultsResponse(runs=runs[: request.limit or 10])


@dataclass
class FakeServices:
    port: int
    ledger: FakeLedger
    conversations: FakeConversations
    rollouts: FakeRollouts


class ThreadServer:
    """A kit gRPC server in a background thread with its own event loop."""

    def __init__(self, registrations: list[Registration]) -> None:
        self.registrations = registrations
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with grpc_serving(self.registrations, address="127.0.0.1:0") as (port, _s, _h):
            self.port = port
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake services did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def fake_services(
    isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeServices]:
    ledger, conversations, rollouts = FakeLedger(), FakeConversations(), FakeRollouts()
    registrations = [
        Registration(  # the EvaluatorService is left out: its calls answer UNIMPLEMENTED
            evaluator_service_pb2_grpc.add_RolloutServiceServicer_to_server,
            rollouts,
            "p2engine.evaluator.v1.RolloutService",
        ),
        Registration(
            ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server,
            ledger,
            "p2engine.ledger.v1.LedgerService",
        ),
        Registration(
            orchestrator_service_pb2_grpc.add_AgentServiceServicer_to_server,
            FakeAgents(),
            "p2engine.orchestrator.v1.AgentService",
        ),
        Registration(
            orchestrator_service_pb2_grpc.add_ConversationServiceServicer_to_server,
            conversations,
            "p2engine.orchestrator.v1.ConversationService",
        ),
        Registration(
            artifacts_service_pb2_grpc.add_ArtifactServiceServicer_to_server,
            FakeArtifacts(conversations),
            "p2engine.artifacts.v1.ArtifactService",
        ),
    ]
    with ThreadServer(registrations) as server:
        for key in ("ledger", "orchestrator", "artifacts", "evaluator"):
            monkeypatch.setenv(endpoints.BY_KEY[key].addr_env, f"127.0.0.1:{server.port}")
        yield FakeServices(server.port, ledger, conversations, rollouts)
