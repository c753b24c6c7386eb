"""`p2engine shell`: a REPL that runs each line as a p2engine command, in-process."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import typer

app = typer.Typer()

PROMPT = "p2engine▸ "
BANNER = "P2Engine shell: type a command (`help` lists them); `exit` or Ctrl-D leaves."


def dispatch(command: Any, line: str) -> bool:
    """Run one shell line; False when the shell should end. Never raises."""
    try:
        args = shlex.split(line)
    except ValueError as exc:
        print(f"error: cannot parse the line: {exc}", file=sys.stderr)
        return True
    if args and args[0] == "p2engine":
        args = args[1:]
    if not args:
        return True
    if args[0] in ("exit", "quit"):
        return False
    if args[0] == "help":
        args = [*args[1:], "--help"]
    if args[0] == "shell":
        print("error: already in the shell", file=sys.stderr)
        return True
    run_line(command, args)
    return True


def run_line(command: Any, args: list[str]) -> int:
    """Run one command like `p2engine <args>` without leaving; returns its exit code."""
    try:
        code = command.main(args, prog_name="p2engine", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument...
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (try `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {' '.join(str(message).split())}{hint}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the shell must survive anything a command does
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


@app.command()
def shell() -> None:
    """An interactive shell: type commands without the `p2engine` prefix."""
    from p2e_cli.main import app as root

    command = typer.main.get_command(root)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        print(BANNER)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            if interactive:
                print()
            return
        except KeyboardInterrupt:
            print()
            continue
        if not dispatch(command, line):
            return
