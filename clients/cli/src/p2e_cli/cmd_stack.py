"""`p2engine up | down | status | logs`: the local stack (see stack.py)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from p2e_cli.stack import Row, Supervisor

app = typer.Typer()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _supervisor() -> Supervisor:
    from p2e_cli import rpc
    from p2e_cli.stack import Supervisor

    try:
        return Supervisor()
    except ValueError as exc:  # e.g. P2E_NATS_URL without a numeric port
        rpc.fail(f"bad stack setting: {exc}")


def _status_table(rows: list[Row]) -> None:
    from p2e_cli import render

    render.show(
        render.table(
            None,
            ["service", "address", "pid", "status"],
            [
                (r.label, r.address, str(r.pid) if r.pid else "-", render.health_style(r.health))
                for r in rows
            ],
        )
    )


def _rows_json(rows: list[Row]) -> list[dict[str, object]]:
    return [
        {"service": r.label, "address": r.address, "pid": r.pid, "status": r.health} for r in rows
    ]


@app.command()
def up(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every service to report SERVING.")
    ] = 30.0,
    json_out: JsonOpt = False,
) -> None:
    """Start nats-server and the five services on 127.0.0.1 under the data folder."""
    from p2e_cli import render
    from p2e_cli.stack import StackError

    supervisor = _supervisor()
    try:
        with render.console().status("starting the stack", spinner="dots") as spinner:
            result = supervisor.up(timeout=timeout, progress=spinner.update)
    except StackError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for line in exc.log_tail:
            print(f"  | {line}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("interrupted: stopped what was started", file=sys.stderr)
        raise typer.Exit(130) from None
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    rows = supervisor.status()
    if json_out:
        render.print_json({"already_running": result.already_running, "services": _rows_json(rows)})
        return
    if result.already_running:
        render.out(f"The stack is already running (data folder {supervisor.layout.root}).")
    else:
        render.out(
            f"The stack is up in {result.seconds:.1f}s (data folder {supervisor.layout.root})."
        )
    _status_table(rows)


@app.command()
def down(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 10.0,
) -> None:
    """Stop every process `p2engine up` started from this data folder (and nothing else)."""
    from p2e_cli import render

    supervisor = _supervisor()
    results, notes = supervisor.down(timeout=timeout)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not results:
        render.out(f"Nothing to stop: no process of the stack runs ({supervisor.layout.root}).")
        return
    for proc, outcome in results:
        render.out(f"{outcome} {proc.label} (pid {proc.pid})")


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Health of each process of the stack: SERVING / NOT_SERVING / down."""
    from p2e_cli import render

    notes: list[str] = []
    rows = _supervisor().status(notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if json_out:
        render.print_json(_rows_json(rows))
        return
    _status_table(rows)


@app.command()
def logs(
    service: Annotated[
        str | None,
        typer.Argument(help="nats, artifact-store, ledger-gateway, ...; all if omitted."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history to show.")] = 50,
) -> None:
    """Show (and follow) the logs of the stack's processes."""
    from p2e_cli import endpoints, rpc
    from p2e_cli.stack import NATS, NATS_LABEL

    supervisor = _supervisor()
    if service is None:
        names = supervisor.log_names()
    elif service.lower() in (NATS, NATS_LABEL):
        names = [NATS]
    else:
        info = endpoints.lookup(service)
        if info is None:
            known = ", ".join(supervisor.label(n) for n in supervisor.log_names())
            rpc.fail(f"unknown service {service!r}: one of {known}", code=2)
        names = [info.key]
    files = {supervisor.label(n): supervisor.layout.log_file(n) for n in names}
    if not any(path.exists() for path in files.values()):
        rpc.fail(f"no logs yet under {supervisor.layout.logs}: start the stack with `p2engine up`")
    positions = _print_tails(files, lines)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            _follow(files, positions)


def _print_tails(files: dict[str, Path], lines: int) -> dict[str, int]:
    """Print the last lines of each file; returns where each file's printed part ends."""
    from p2e_cli.procs import tail_at

    several = len(files) > 1
    positions: dict[str, int] = {}
    for label, path in files.items():
        history, positions[label] = tail_at(path, lines)
        if several and history:
            print(f"==> {label} ({path}) <==")
        for line in history:
            print(line)
    sys.stdout.flush()
    return positions


def _follow(files: dict[str, Path], positions: dict[str, int], poll: float = 0.2) -> None:
    """Print lines appended to the files after `positions`, prefixed when several, forever."""
    several = len(files) > 1
    partial = dict.fromkeys(files, b"")
    while True:
        for label, path in files.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < positions[label]:  # truncated or replaced
                positions[label], partial[label] = 0, b""
            if size == positions[label]:
                continue
            with path.open("rb") as fh:
                fh.seek(positions[label])
                data = partial[label] + fh.read(size - positions[label])
            positions[label] = size
            *complete, partial[label] = data.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                print(f"[{label}] {line}" if several else line, flush=True)
        time.sleep(poll)
