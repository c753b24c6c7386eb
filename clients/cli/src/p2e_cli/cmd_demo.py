"""`p2engine demo`: the offline demo run by `make run` against a running stack."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli.cmd_chat import conversations_stub, open_conversation, run_turn

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer()

DEMO_AGENT = "agent_alpha"
DEMO_PAYEE = "agent_beta"
DEMO_MESSAGES = (
    "Check my balance",
    "Transfer 25 to agent_beta for helping with analysis",
    "What's the weather in Paris?",
)


async def _init_wallets(session: Session) -> Any:
    from p2e_cli import rpc
    from p2engine.ledger.v1 import ledger_service_pb2 as pb
    from p2engine.ledger.v1 import ledger_service_pb2_grpc as pbg

    ledger = session.stub("ledger", pbg.LedgerServiceStub)
    return await ledger.InitWallets(pb.InitWalletsRequest(request_id=rpc.new_request_id()))


async def _balance(session: Session, agent: str) -> Any:
    from p2engine.ledger.v1 import ledger_service_pb2 as pb
    from p2engine.ledger.v1 import ledger_service_pb2_grpc as pbg

    ledger = session.stub("ledger", pbg.LedgerServiceStub)
    return await ledger.GetBalance(pb.GetBalanceRequest(agent_id=agent))


async def artifact_count(session: Session, conversation_id: str, at_least: int, wait: float) -> int:
    """Artifacts stored for a conversation, waiting up to `wait` s for the bus to deliver
    `at_least` of them (the artifact-store indexes asynchronously)."""
    from p2e_cli.cmd_artifact import artifacts_stub
    from p2engine.artifacts.v1 import artifacts_service_pb2 as pb

    stub = artifacts_stub(session)
    deadline = time.monotonic() + wait
    while True:
        reply = await stub.ListArtifacts(
            pb.ListArtifactsRequest(conversation_id=conversation_id, page_size=1)
        )
        if reply.total_size >= at_least or time.monotonic() > deadline:
            return int(reply.total_size)
        await asyncio.sleep(0.1)


async def _states(session: Session, conversation_id: str) -> int:
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    stack = await conversations_stub(session).GetStack(
        pb.GetStackRequest(conversation=conversation_id)
    )
    return len(stack.states)


@app.command()
def demo(
    wait: Annotated[float, typer.Option(help="Seconds to wait for artifacts to be stored.")] = 5.0,
) -> None:
    """Offline demo: init wallets, chat with agent_alpha, show agent_beta's balance."""
    from p2e_cli import render, rpc

    async def body(session: Session) -> None:
        wallets = await _init_wallets(session)
        render.out(
            f"Wallets ready: {len(wallets.wallets)} ({len(wallets.created_agent_ids)} created now)."
        )
        conversations = conversations_stub(session)
        conv = await open_conversation(conversations, DEMO_AGENT, None)
        render.out(f"[dim]Conversation {conv.id} with {DEMO_AGENT}[/dim]")
        for text in DEMO_MESSAGES:
            await run_turn(conversations, conv.id, text)
        payee = await _balance(session, DEMO_PAYEE)
        states = await _states(session, conv.id)
        count = await artifact_count(session, conv.id, states, wait)
        render.out(f"{DEMO_PAYEE} balance: [bold]{render.money(payee.balance)}[/bold]")
        render.out(f"Artifacts recorded for conversation {conv.id}: [bold]{count}[/bold]")

    rpc.run(body)
