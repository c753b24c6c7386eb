"""`p2engine config ...`: per-conversation overrides (behavior template, tools)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli import inputs
from p2e_cli.cmd_chat import conversations_stub

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="Per-conversation configuration overrides.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ConvArg = Annotated[str, typer.Argument(metavar="CONVERSATION", help="Conversation name or id.")]


def _update(conversation: str, change: Any) -> Any:
    """Read the overrides, apply `change` to them, write them back (SetOverrides replaces)."""
    from p2e_cli import rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    async def body(session: Session) -> Any:
        stub = conversations_stub(session)
        current = await stub.GetOverrides(pb.GetOverridesRequest(conversation=conversation))
        change(current)
        request = pb.SetOverridesRequest(
            conversation=conversation, overrides=current, request_id=rpc.new_request_id()
        )
        return await stub.SetOverrides(request)

    return rpc.run(body)


def _show(conversation: str, overrides: Any, json_out: bool) -> None:
    from p2e_cli import render, render_chat

    if json_out:
        render.print_json(overrides)
    else:
        render.show(render_chat.overrides_view(conversation, overrides))


@app.command("set-behavior")
def set_behavior(
    conversation: ConvArg,
    template: Annotated[str, typer.Argument(help="Behavior template, e.g. weather_expert.")],
    json_out: JsonOpt = False,
) -> None:
    """Use another behavior template (system prompt) in a conversation."""

    def change(overrides: Any) -> None:
        overrides.behavior_template = template

    _show(conversation, _update(conversation, change), json_out)


@app.command("set-tools")
def set_tools(
    conversation: ConvArg,
    tools: Annotated[
        str, typer.Argument(help="Comma-separated tools, e.g. get_weather,delegate; '' resets.")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Offer other tools in a conversation."""
    names = inputs.csv_list(tools)

    def change(overrides: Any) -> None:
        del overrides.tools[:]
        overrides.tools.extend(names)

    _show(conversation, _update(conversation, change), json_out)


@app.command("show-overrides")
def show_overrides(conversation: ConvArg, json_out: JsonOpt = False) -> None:
    """A conversation's current overrides."""
    from p2e_cli import rpc
    from p2engine.orchestrator.v1 import orchestrator_service_pb2 as pb

    async def body(session: Session) -> Any:
        request = pb.GetOverridesRequest(conversation=conversation)
        return await conversations_stub(session).GetOverrides(request)

    _show(conversation, rpc.run(body), json_out)
