"""Rich views of artifacts, evaluators, evaluations and rollouts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from p2e_cli.render import enum_label, key_values, shorten, styled, table, when


def artifact_summary(artifact: Any, width: int = 70) -> str:
    """The gist of an artifact's payload: a message's text, a call's target, else compact JSON."""
    if artifact.blob_ref and not artifact.payload:
        return f"({artifact.blob_ref})"
    if artifact.content_type != "application/json":
        return f"({artifact.content_type}, {artifact.size_bytes} bytes)"
    try:
        data = json.loads(artifact.payload or b"{}")
    except ValueError:
        return shorten(artifact.payload.decode(errors="replace"), width)
    if isinstance(data, dict):
        gist = _state_gist(data) or _transfer_gist(data) or _evaluation_gist(data)
        if gist:
            return shorten(gist, width)
    return shorten(json.dumps(data, separators=(",", ":"), ensure_ascii=False), width)


def _field(data: dict[str, Any], name: str) -> Any:
    """A field by its proto name or its JSON (lowerCamel) name."""
    head, *rest = name.split("_")
    return data.get(name, data.get(head + "".join(p.title() for p in rest)))


def _state_gist(data: dict[str, Any]) -> str:
    """An InteractionState payload: "target: text", the tools it calls, or "target data"."""
    from p2e_cli.render_chat import tool_call_names

    text, target = _field(data, "text") or "", _field(data, "target") or ""
    data_json = _field(data, "data_json") or ""
    if text:
        return f"{target}: {text}" if target else str(text)
    calls = tool_call_names(data_json) if isinstance(data_json, str) else []
    if calls:
        return "calls " + ", ".join(calls)
    if target:
        return f"{target} {data_json}".strip()
    return ""


def _evaluation_gist(data: dict[str, Any]) -> str:
    evaluator, score = _field(data, "evaluator_id"), data.get("score")
    if not evaluator or score is None:
        return ""
    return f"{evaluator}: score {score}"


def _transfer_gist(data: dict[str, Any]) -> str:
    """A ledger payload with a transfer: "agent_alpha → agent_beta 25.00 P2E settled"."""
    transfer = data.get("transfer")
    if not isinstance(transfer, dict):
        return ""
    amount = transfer.get("amount") or {}
    money = f"{amount.get('amount', '')} {amount.get('asset', '')}".strip()
    status = str(transfer.get("status", "")).removeprefix("TRANSFER_STATUS_").lower()
    payer, payee = _field(transfer, "from_agent"), _field(transfer, "to_agent")
    return f"{payer} → {payee} {money} {status}".strip()


def artifacts_table(conversation: str, artifacts: Sequence[Any], total: int) -> Table:
    shown = f"{len(artifacts)} of {total}" if total > len(artifacts) else str(len(artifacts))
    return table(
        f"Artifacts of {conversation} ({shown})",
        ["#", "time", "kind", "agent", "by", "seq", "summary"],
        [
            (
                str(a.sequence),
                when(a.create_time),
                a.kind,
                a.agent_id,
                a.produced_by,
                str(a.state_seq) if a.state_seq else "",
                artifact_summary(a),
            )
            for a in artifacts
        ],
    )


def evaluators_table(evaluators: Sequence[Any]) -> Table:
    return table(
        "Evaluators",
        ["evaluator", "version", "model", "metrics", "description"],
        [
            (e.id, e.version, e.model, ", ".join(e.metrics), shorten(e.description, 60))
            for e in evaluators
        ],
    )


def evaluation_view(e: Any) -> RenderableType:
    pairs: list[tuple[str, Any]] = [
        ("evaluation", e.id),
        ("evaluator", f"{e.evaluator_id} ({e.judge_model})"),
        ("conversation", e.conversation_id + (f" / {e.branch_id}" if e.branch_id else "")),
        ("score", styled(f"{e.score:.3f}", "bold")),
    ]
    pairs += [(f"  {name}", f"{value:.3f}") for name, value in sorted(e.metrics.items())]
    pairs.append(("rationale", e.rationale))
    return key_values(None, pairs)


def rollout_state(value: int) -> str:
    from p2engine.evaluator.v1 import evaluator_pb2

    return enum_label(evaluator_pb2.RolloutState, value, "ROLLOUT_STATE_").lower()


def metric_of(run: Any, metric: str) -> str:
    if not run.HasField("evaluation"):
        return ""
    if metric in run.evaluation.metrics:
        return f"{run.evaluation.metrics[metric]:.3f}"
    return f"{run.evaluation.score:.3f}" if metric == "score" else ""


def variant_label(run: Any) -> str:
    try:
        variant = json.loads(run.variant_json) if run.variant_json else {}
    except ValueError:
        return shorten(run.variant_json, 50)
    if not isinstance(variant, dict):
        return shorten(run.variant_json, 50)
    return shorten(
        ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in variant.items()),
        60,
    )


def runs_table(title: str, runs: Sequence[Any], metric: str = "score") -> Table:
    return table(
        title,
        ["#", "run", "team", "variant", "state", metric, "conversation"],
        [
            (
                str(i),
                r.id,
                r.team,
                f"{r.variant_index}: {variant_label(r)}",
                rollout_state(r.state) + (f" ({shorten(r.error, 40)})" if r.error else ""),
                metric_of(r, metric),
                r.conversation_id,
            )
            for i, r in enumerate(runs, 1)
        ],
    )


def rollout_line(rollout: Any) -> str:
    finished = f", finished {when(rollout.finish_time)}" if rollout.finish_time.seconds else ""
    return (
        f"Rollout [bold]{escape(rollout.name)}[/bold] ({escape(rollout.id)}): "
        f"{rollout_state(rollout.state)}, {len(rollout.runs)} run(s), "
        f"started {when(rollout.create_time)}{finished}"
    )


def progress_line(p: Any) -> str:
    run = p.run
    score = metric_of(run, "score")
    score_text = f" score {score}" if score else ""
    error = f" [red]{escape(shorten(run.error, 60))}[/red]" if run.error else ""
    return (
        f"{escape(f'[{p.completed}/{p.total}]')} {escape(run.team)}#{run.variant_index} "
        f"{rollout_state(run.state)}{score_text}{error}"
    )


def rollouts_table(rollouts: Sequence[Any]) -> Table:
    return table(
        "Rollouts (newest first)",
        ["id", "name", "state", "runs", "started", "finished"],
        [
            (
                r.id,
                r.name,
                rollout_state(r.state),
                str(len(r.runs)),
                when(r.create_time),
                when(r.finish_time),
            )
            for r in rollouts
        ],
    )
