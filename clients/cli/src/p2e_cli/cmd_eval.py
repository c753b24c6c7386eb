"""`p2engine eval ...`: judges and rankings (EvaluatorService, RolloutService)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli.cmd_chat import resolve_conversation

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="Evaluate conversations and rank rollout runs.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def evaluators_stub(session: Session) -> Any:
    from p2engine.evaluator.v1 import evaluator_service_pb2_grpc

    return session.stub("evaluator", evaluator_service_pb2_grpc.EvaluatorServiceStub)


def rollouts_stub(session: Session) -> Any:
    from p2engine.evaluator.v1 import evaluator_service_pb2_grpc

    return session.stub("evaluator", evaluator_service_pb2_grpc.RolloutServiceStub)


@app.command("list")
def list_evaluators(json_out: JsonOpt = False) -> None:
    """The registered evaluators."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    async def body(session: Session) -> Any:
        return await evaluators_stub(session).ListEvaluators(pb.ListEvaluatorsRequest())

    reply = rpc.run(body)
    if json_out:
        render.print_json(reply)
    elif not reply.evaluators:
        render.out("No evaluators are registered.")
    else:
        render.show(render_eval.evaluators_table(reply.evaluators))


@app.command("run")
def run_evaluation(
    conversation: Annotated[
        str, typer.Argument(metavar="CONVERSATION", help="Conversation id or name.")
    ],
    evaluator: Annotated[str, typer.Option(help="Evaluator id.")] = "gpt4_judge",
    rubric: Annotated[str | None, typer.Option(help="Rubric replacing the default.")] = None,
    branch: Annotated[str | None, typer.Option(help="Branch id (default: as recorded).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Judge a conversation."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    async def body(session: Session) -> Any:
        conversation_id = await resolve_conversation(session, conversation)
        request = pb.EvaluateRequest(
            evaluator_id=evaluator,
            conversation_id=conversation_id,
            branch_id=branch or "",
            rubric=rubric or "",
            request_id=rpc.new_request_id(),
        )
        return await evaluators_stub(session).Evaluate(request, deadline=120.0)

    reply = rpc.run(body)
    render.print_json(reply) if json_out else render.show(render_eval.evaluation_view(reply))


@app.command()
def top(
    rollout_id: Annotated[str, typer.Argument(metavar="ROLLOUT_ID", help="Rollout id.")],
    metric: Annotated[str, typer.Option(help="Metric to rank by.")] = "score",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many runs.")] = 10,
    json_out: JsonOpt = False,
) -> None:
    """A rollout's runs, best first by a metric."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    async def body(session: Session) -> Any:
        request = pb.ListResultsRequest(rollout_id=rollout_id, metric=metric, limit=limit)
        return await rollouts_stub(session).ListResults(request)

    reply = rpc.run(body)
    if json_out:
        render.print_json(reply)
    elif not reply.runs:
        render.out(f"Rollout {render.escape(rollout_id)} has no results yet.")
    else:
        title = f"Best runs of {rollout_id} by {metric}"
        render.show(render_eval.runs_table(title, reply.runs, metric))


@app.command()
def diff(
    run_a: Annotated[str, typer.Argument(help="First run id.")],
    run_b: Annotated[str, typer.Argument(help="Second run id.")],
    json_out: JsonOpt = False,
) -> None:
    """Compare two rollout runs metric by metric (b minus a)."""
    from p2e_cli import render, render_eval, rpc
    from p2engine.evaluator.v1 import evaluator_service_pb2 as pb

    async def body(session: Session) -> Any:
        request = pb.CompareRunsRequest(run_a=run_a, run_b=run_b)
        return await rollouts_stub(session).CompareRuns(request)

    reply = rpc.run(body)
    if json_out:
        render.print_json(reply)
        return
    render.show(render_eval.runs_table("Runs", [reply.a, reply.b]))
    rows = [(name, f"{delta:+.3f}") for name, delta in sorted(reply.deltas.items())]
    render.show(render.table("b - a", ["metric", "delta"], rows))
