"""`p2engine chat with AGENT`: a conversation, interactive or scripted (ConversationService)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="Talk to an agent.")

EXIT_WORDS = {"exit", "quit", ":q"}
PROMPT = "You> "


def conversations_stub(session: Session) -> Any:
    from p2engine.orchestrator.v1 import orchestrator_service_pb2_grpc

    return session.stub("orchestrator", orchestrator_service_pb2_grpc.ConversationServiceStub)


async def open_conversation(conversations: Any, agent: str, name: str | None) -> Any:
    """A new conversation with `agent`; a named one that already exists is resumed."""
    from p2e_cli import rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    request = pb.CreateConversationRequest(
        agent_id=agent, name=name or "", request_id=rpc.new_request_id()
    )
    try:
        return await conversations.CreateConversation(request)
    except rpc.CallFailed as exc:
        if not name or exc.code != "ALREADY_EXISTS":
            raise
    conversation = await conversations.GetConversation(pb.GetConversationRequest(conversation=name))
    if conversation.agent_id != agent:
        rpc.fail(f"conversation {name!r} is with {conversation.agent_id}, not {agent}")
    return conversation


async def run_turn(
    conversations: Any,
    conversation_id: str,
    text: str,
    *,
    answer: bool = False,
    json_out: bool = False,
    echo_user: bool = True,
) -> Any:
    """Send `text` (or, when the agent asked a question, answer it) and print what streams
    back. Returns the TurnFinished event (None if the stream ended without one)."""
    from p2e_cli import render, render_chat, rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    if answer:
        stream = conversations.RespondToUser(
            pb.RespondToUserRequest(
                conversation=conversation_id, text=text, request_id=rpc.new_request_id()
            )
        )
    else:
        stream = conversations.SendMessage(
            pb.SendMessageRequest(
                conversation=conversation_id, text=text, request_id=rpc.new_request_id()
            )
        )
    finished, said = None, False
    async for event in stream:
        if json_out:
            render.print_json(event)
        if event.WhichOneof("event") == "finished":
            finished = event.finished
            continue
        said = said or render_chat.state_kind(event.state) == "assistant_message"
        line = render_chat.state_line(event.state, echo_user=echo_user)
        if line and not json_out:
            render.out(line)
    if finished is not None and finished.text and not said and not json_out:
        render.out(f"[bold green]>[/bold green] {render.escape(finished.text)}")
    return finished


def prompt_lines() -> Iterator[str]:
    """Lines typed at `You> ` until EOF or exit/quit."""
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    while True:
        try:
            line = input(PROMPT)
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: leave
            print()
            return
        text = line.strip()
        if text.lower() in EXIT_WORDS:
            return
        if text:
            yield text


@app.command("with")
def chat_with(
    agent: Annotated[str, typer.Argument(help="Agent id, e.g. agent_alpha.")],
    message: Annotated[
        list[str] | None,
        typer.Option("--message", "-m", help="Send this and leave (repeatable, in order)."),
    ] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Name it (resumed if it exists).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print every streamed event as a JSON line.")
    ] = False,
) -> None:
    """Chat with an agent: interactive at `You> `, or scripted with --message."""
    from p2e_cli import render, rpc
    from p2engine.orchestrator.v1 import orchestrator_pb2

    scripted = bool(message)

    async def start(session: Session) -> Any:
        return await open_conversation(conversations_stub(session), agent, conversation)

    conv = rpc.run(start)
    if json_out:
        render.print_json({"conversation": render.as_dict(conv)})
    else:
        render.out(
            f"[dim]Conversation {render.escape(conv.name or conv.id)} ({conv.id}) "
            f"with {render.escape(conv.agent_id)}"
            + ("" if scripted else ": type `exit` or press Ctrl-D to leave")
            + "[/dim]"
        )
    waiting = conv.state == orchestrator_pb2.CONVERSATION_STATE_WAITING_FOR_USER
    # One event loop per turn: the `You> ` prompt reads outside any loop, so Ctrl-C there
    # interrupts at once (asyncio.run would only cancel its task and wait for Enter).
    for text in message if message else prompt_lines():
        finished = rpc.run(_turn_body(conv.id, text, waiting, json_out, scripted))
        waiting = bool(finished and finished.waiting_for_user)


def _turn_body(
    conversation_id: str, text: str, answer: bool, json_out: bool, scripted: bool
) -> Callable[[Session], Awaitable[Any]]:
    """One turn; in an interactive chat a failed turn is reported and the chat goes on."""
    from p2e_cli import rpc

    async def body(session: Session) -> Any:
        try:
            return await run_turn(
                conversations_stub(session),
                conversation_id,
                text,
                answer=answer,
                json_out=json_out,
                echo_user=scripted,
            )
        except rpc.CallFailed as exc:
            if scripted or exc.code == "UNAVAILABLE":
                raise
            print(f"error: {rpc.describe(exc)}", file=sys.stderr)
            return None

    return body


async def resolve_conversation(session: Session, value: str) -> str:
    """The id of the conversation named `value`; `value` itself when the orchestrator does
    not know it (e.g. "system") or cannot be asked."""
    from p2e_cli import rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    try:
        stub = conversations_stub(session)
        conversation = await stub.GetConversation(pb.GetConversationRequest(conversation=value))
    except (rpc.CallFailed, rpc.Unreachable):
        return value
    return str(conversation.id) or value
