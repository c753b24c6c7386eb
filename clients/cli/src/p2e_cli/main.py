"""The `p2engine` command: registers the command groups. Imports only typer (and the command
modules, which import only typer at the top) so `p2engine --help` starts fast; gRPC, Rich and
the generated stubs are imported inside the commands that use them."""

from __future__ import annotations

import typer

from p2e_cli import (
    cmd_agent,
    cmd_artifact,
    cmd_chat,
    cmd_config,
    cmd_conversation,
    cmd_demo,
    cmd_eval,
    cmd_ledger,
    cmd_rollout,
    cmd_shell,
    cmd_stack,
)

app = typer.Typer(
    name="p2engine",
    help="P2Engine: multi-agent orchestration over gRPC. Start the local stack with `p2engine up`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(cmd_stack.app)  # up, down, status, logs
app.add_typer(cmd_agent.app, name="agent")
app.add_typer(cmd_chat.app, name="chat")
app.add_typer(cmd_conversation.app, name="conversation")
app.add_typer(cmd_config.app, name="config")
app.add_typer(cmd_ledger.app, name="ledger")
app.add_typer(cmd_artifact.app, name="artifact")
app.add_typer(cmd_eval.app, name="eval")
app.add_typer(cmd_rollout.app, name="rollout")
app.add_typer(cmd_shell.app)  # shell
app.add_typer(cmd_demo.app)  # demo

if __name__ == "__main__":
    app()
