"""`p2engine agent ...`: the configured agents (AgentService)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="The configured agents.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _agents(session: Session) -> Any:
    from p2engine.orchestrator.v1 import orchestrator_service_pb2_grpc

    return session.stub("orchestrator", orchestrator_service_pb2_grpc.AgentServiceStub)


@app.command("list")
def list_agents(json_out: JsonOpt = False) -> None:
    """List the agents, their models and tools."""
    from p2e_cli import render, render_chat, rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    async def body(session: Session) -> Any:
        return await _agents(session).ListAgents(pb.ListAgentsRequest())

    reply = rpc.run(body)
    if json_out:
        render.print_json(reply)
    elif not reply.agents:
        render.out("No agents are configured (config/agents.yml).")
    else:
        render.show(render_chat.agents_table(reply.agents))


@app.command()
def show(
    agent: Annotated[str, typer.Argument(help="Agent id.")],
    json_out: JsonOpt = False,
) -> None:
    """One agent's configuration."""
    from p2e_cli import render, render_chat, rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    async def body(session: Session) -> Any:
        return await _agents(session).GetAgent(pb.GetAgentRequest(id=agent))

    reply = rpc.run(body)
    render.print_json(reply) if json_out else render.show(render_chat.agents_table([reply]))
