"""`p2engine artifact ...`: what the artifact bus recorded (ArtifactService)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli.cmd_chat import resolve_conversation

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="Artifacts and their provenance.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def artifacts_stub(session: Session) -> Any:
    from p2engine.artifacts.v1 import artifacts_service_pb2_grpc

    return session.stub("artifacts", artifacts_service_pb2_grpc.ArtifactServiceStub)


async def list_artifacts(
    session: Session, conversation: str, *, kind: str = "", limit: int = 50
) -> tuple[str, Any]:
    """(conversation id, the newest `limit` artifacts), resolving a conversation name."""
    from p2engine.artifacts.v1 import artifacts_service_pb2 as pb

    stub = artifacts_stub(session)

    async def query(conversation_id: str) -> Any:
        request = pb.ListArtifactsRequest(
            conversation_id=conversation_id, kind=kind, page_size=limit, newest_first=True
        )
        return await stub.ListArtifacts(request)

    reply = await query(conversation)
    if reply.total_size == 0:  # perhaps a conversation name: ask the orchestrator for its id
        resolved = await resolve_conversation(session, conversation)
        if resolved != conversation:
            return resolved, await query(resolved)
    return conversation, reply


@app.command()
def show(
    conversation: Annotated[
        str, typer.Argument(metavar="CONVERSATION", help="Conversation id or name ('system').")
    ],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The latest N artifacts.")] = 50,
    kind: Annotated[
        str | None, typer.Option(help="Only this kind, e.g. tool_call, transfer_settled.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The latest artifacts of a conversation, oldest first."""
    from p2e_cli import render, render_eval, rpc

    async def body(session: Session) -> tuple[str, Any]:
        return await list_artifacts(session, conversation, kind=kind or "", limit=limit)

    conversation_id, reply = rpc.run(body)
    if json_out:
        render.print_json(reply)
        return
    if not reply.artifacts:
        render.out(f"No artifacts for {render.escape(conversation)}.")
        return
    artifacts = list(reversed(reply.artifacts))  # asked newest first; shown in order
    render.show(render_eval.artifacts_table(conversation_id, artifacts, reply.total_size))
