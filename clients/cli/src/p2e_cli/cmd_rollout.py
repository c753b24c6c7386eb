"""`p2engine rollout ...`: A/B rollouts of agent configurations (RolloutService)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli.cmd_eval import rollouts_stub

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="A/B rollouts of agent configurations.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def start(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Rollout YAML, e.g. config/demo_rollout.yml.")
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream progress until it ends.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Name (default: the file's stem).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a rollout from a YAML file."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    try:
        config_yaml = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        rpc.fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}", code=2)

    async def body(session: Session) -> Any:
        stub = rollouts_stub(session)
        request = pb.StartRolloutRequest(
            config_yaml=config_yaml, name=name or file.stem, request_id=rpc.new_request_id()
        )
        rollout = await stub.StartRollout(request)
        if json_out:
            render.print_json({"rollout": render.as_dict(rollout)})
        else:
            render.out(render_eval.rollout_line(rollout))
        if not follow:
            return rollout
        async for progress in stub.WatchRollout(pb.WatchRolloutRequest(id=rollout.id)):
            if json_out:
                render.print_json({"progress": render.as_dict(progress)})
            else:
                render.out(render_eval.progress_line(progress))
        return await stub.GetRollout(pb.GetRolloutRequest(id=rollout.id))

    rollout = rpc.run(body)
    if json_out:
        if follow:
            render.print_json({"rollout": render.as_dict(rollout)})
        return
    if rollout.runs:
        render.show(render_eval.runs_table("Runs", rollout.runs))
    render.out(f"Rank the runs with `p2engine eval top {rollout.id} --metric score`.")


@app.command("list")
def list_rollouts(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Rollouts, newest first."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    async def body(session: Session) -> Any:
        return await rollouts_stub(session).ListRollouts(pb.ListRolloutsRequest(page_size=limit))

    reply = rpc.run(body)
    if json_out:
        render.print_json(reply)
    elif not reply.rollouts:
        render.out("No rollouts yet: `p2engine rollout start config/demo_rollout.yml`.")
    else:
        render.show(render_eval.rollouts_table(reply.rollouts))


@app.command()
def show(
    rollout_id: Annotated[str, typer.Argument(metavar="ROLLOUT_ID", help="Rollout id.")],
    json_out: JsonOpt = False,
) -> None:
    """One rollout and its runs."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    async def body(session: Session) -> Any:
        return await rollouts_stub(session).GetRollout(pb.GetRolloutRequest(id=rollout_id))

    rollout = rpc.run(body)
    if json_out:
        render.print_json(rollout)
        return
    render.out(render_eval.rollout_line(rollout))
    if rollout.runs:
        render.show(render_eval.runs_table("Runs", rollout.runs))
