"""`p2engine conversation ...`: stacks, branches, rewind, checkout, watch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli.cmd_chat import conversations_stub

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="Conversations, their stacks and branches.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ConvArg = Annotated[str, typer.Argument(metavar="CONVERSATION", help="Conversation name or id.")]


def _call(method: str, request: Any) -> Any:
    from p2e_cli import rpc

    async def body(session: Session) -> Any:
        return await getattr(conversations_stub(session), method)(request)

    return rpc.run(body)


def _pb() -> Any:
    from p2engine.orchestrator.v1 import orchestrator_service_pb2

    return orchestrator_service_pb2


@app.command("list")
def list_conversations(
    agent: Annotated[str | None, typer.Option(help="Only this agent's conversations.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Conversations, newest first."""
    from p2e_cli import render, render_chat

    reply = _call(
        "ListConversations", _pb().ListConversationsRequest(page_size=limit, agent_id=agent or "")
    )
    if json_out:
        render.print_json(reply)
    elif not reply.conversations:
        render.out("No conversations yet: start one with `p2engine chat with agent_alpha`.")
    else:
        render.show(render_chat.conversations_table(reply.conversations))


@app.command()
def show(
    conversation: ConvArg,
    branch: Annotated[str | None, typer.Option(help="Branch id (default: the active one).")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Only the last N states (0: all).")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """The interaction stack of a conversation's branch."""
    from p2e_cli import render, render_chat

    reply = _call(
        "GetStack",
        _pb().GetStackRequest(conversation=conversation, branch_id=branch or "", limit=limit),
    )
    if json_out:
        render.print_json(reply)
        return
    render.out(render_chat.branch_line(reply.branch))
    if reply.states:
        render.show(render_chat.stack_table(reply.states))
    else:
        render.out("No states yet.")


@app.command()
def branches(conversation: ConvArg, json_out: JsonOpt = False) -> None:
    """A conversation's branches; * marks the active one."""
    from p2e_cli import render, render_chat

    reply = _call("ListBranches", _pb().ListBranchesRequest(conversation=conversation))
    if json_out:
        render.print_json(reply)
    else:
        render.show(render_chat.branches_table(reply.branches))


@app.command()
def watch(
    conversation: ConvArg,
    after: Annotated[
        int, typer.Option(min=0, help="Resume after this seq (0: from the start).")
    ] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Print a conversation's states as they are appended, until Ctrl-C."""
    from p2e_cli import render, render_chat, rpc

    request = _pb().WatchConversationRequest(conversation=conversation, after_seq=after)

    async def body(session: Session) -> None:
        async for state in conversations_stub(session).WatchConversation(request):
            if json_out:
                render.print_json(state)
                continue
            line = render_chat.state_line(state)
            if line:
                render.out(f"[dim]{state.seq:>4}[/dim] {line}")

    rpc.watch(body)


@app.command()
def rewind(
    conversation: ConvArg,
    seq: Annotated[int, typer.Argument(min=0, help="Keep states up to and including this seq.")],
    branch: Annotated[
        bool, typer.Option("--branch/--no-branch", help="Fork a new branch (nothing is lost).")
    ] = True,
    name: Annotated[str | None, typer.Option(help="Name of the new branch.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Go back to an earlier state on a new branch."""
    from p2e_cli import render, render_chat, rpc

    reply = _call(
        "Rewind",
        _pb().RewindRequest(
            conversation=conversation,
            seq=seq,
            new_branch=branch,
            branch_name=name or "",
            request_id=rpc.new_request_id(),
        ),
    )
    render.print_json(reply) if json_out else render.out(render_chat.branch_line(reply))


@app.command()
def checkout(
    conversation: ConvArg,
    branch: Annotated[str, typer.Argument(help="Branch id or name.")],
    json_out: JsonOpt = False,
) -> None:
    """Make a branch the active one."""
    from p2e_cli import render, render_chat

    reply = _call("Checkout", _pb().CheckoutRequest(conversation=conversation, branch=branch))
    render.print_json(reply) if json_out else render.out(render_chat.branch_line(reply))


@app.command()
def cancel(conversation: ConvArg, json_out: JsonOpt = False) -> None:
    """Cancel a conversation and its running turn."""
    from p2e_cli import render, render_chat, rpc

    reply = _call(
        "CancelConversation",
        _pb().CancelConversationRequest(conversation=conversation, request_id=rpc.new_request_id()),
    )
    if json_out:
        render.print_json(reply)
    else:
        render.out(
            f"{render.escape(reply.name or reply.id)} is {render_chat.conversation_state(reply)}"
        )
