"""EvaluatorService over a real socket, reading a real artifact-store (port 0) that is fed
through a real nats-server, the way the orchestrator feeds it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from p2e_artifact_store.config import Settings as ArtifactSettings
from p2e_artifact_store.server import running as artifact_store_running
from p2e_evaluator.config import Settings
from p2e_evaluator.server import running
from p2e_kit.bus import EVALS, MSG_ID_HEADER, Bus, artifact_subject, evaluation_completed_subject
from p2e_kit.channels import open_channel
from p2e_kit.db import sqlite_url
from p2e_kit.natsd import NatsServer, free_port
from p2e_kit.service import grpc_serving
from p2e_kit.status import decode
from p2engine.artifacts.v1 import artifacts_pb2, artifacts_service_pb2, artifacts_service_pb2_grpc
from p2engine.evaluator.v1 import evaluator_service_pb2, evaluator_service_pb2_grpc, events_pb2
from p2engine.orchestrator.v1 import orchestrator_pb2

pb = evaluator_service_pb2
WEATHER = {"city": "Paris", "temperature_c": 18, "conditions": "partly cloudy"}


@dataclass
class Stack:
    evaluator: evaluator_service_pb2_grpc.EvaluatorServiceStub
    rollouts: evaluator_service_pb2_grpc.RolloutServiceStub
    artifacts: artifacts_service_pb2_grpc.ArtifactServiceStub


@asynccontextmanager
async def evaluator_serving(
    nats_url: str, artifacts_addr: str, tmp_path: Path
) -> AsyncIterator[int]:
    settings = Settings(
        nats_url=nats_url,
        database_url=sqlite_url(tmp_path / "evaluator.db"),
        data_dir=tmp_path,
        config_dir=tmp_path / "config",
        artifacts_addr=artifacts_addr,
        artifacts_deadline_seconds=3.0,
        port=0,
    )
    async with running(settings) as app:
        async with grpc_serving(app.registrations(), address="127.0.0.1:0") as (port, _, _):
            yield port


@pytest.fixture
async def stack(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Stack]:
    store_settings = ArtifactSettings(
        nats_url=nats_server.url,
        database_url=sqlite_url(tmp_path / "artifacts.db"),
        data_dir=tmp_path,
        port=0,
        ingest_fetch_timeout_seconds=0.2,
    )
    async with artifact_store_running(store_settings) as store_app:
        registrations = store_app.registrations()
        async with grpc_serving(registrations, address="127.0.0.1:0") as (store_port, _, _):
            address = f"127.0.0.1:{store_port}"
            async with (
                open_channel(address) as store_channel,
                evaluator_serving(nats_server.url, address, tmp_path) as port,
                open_channel(f"127.0.0.1:{port}") as channel,
            ):
                yield Stack(
                    evaluator_service_pb2_grpc.EvaluatorServiceStub(channel),
                    evaluator_service_pb2_grpc.RolloutServiceStub(channel),
                    artifacts_service_pb2_grpc.ArtifactServiceStub(store_channel),
                )


def state_artifact(
    conv: str, seq: int, kind: str, *, text: str = "", target: str = "", data: object = None
) -> artifacts_pb2.Artifact:
    """What the orchestrator publishes for one interaction state."""
    ident = f"{conv}-s{seq}"
    state = orchestrator_pb2.InteractionState(
        id=ident,
        conversation_id=conv,
        branch_id=f"{conv}-main",
        seq=seq,
        agent_id="agent_alpha",
        kind=orchestrator_pb2.StateKind.Value(f"STATE_KIND_{kind.upper()}"),
        text=text,
        target=target,
        data_json=json.dumps(data) if data is not None else "",
    )
    return artifacts_pb2.Artifact(
        id=ident,
        kind=kind,
        conversation_id=conv,
        branch_id=state.branch_id,
        agent_id="agent_alpha",
        produced_by="orchestrator",
        parent_ids=[f"{conv}-s{seq - 1}"] if seq > 1 else [],
        content_type="application/json",
        payload=json_format.MessageToJson(state).encode(),
        state_seq=seq,
    )


async def publish_conversation(bus: Bus, stack: Stack, conv: str, *, good: bool) -> None:
    answer = "It is 18°C and partly cloudy in Paris." if good else "I checked."
    states = [
        state_artifact(conv, 1, "user_message", text="What's the weather in Paris?"),
        state_artifact(conv, 2, "tool_call", target="get_weather", data={"city": "Paris"}),
        state_artifact(conv, 3, "tool_result", target="get_weather", data=WEATHER),
        state_artifact(conv, 4, "assistant_message", text=answer),
        state_artifact(conv, 5, "finished"),
    ]
    for message in states:
        await bus.publish(artifact_subject(conv, message.kind), message, message.id)
    deadline = time.monotonic() + 5
    request = artifacts_service_pb2.ListArtifactsRequest(conversation_id=conv)
    while (await stack.artifacts.ListArtifacts(request)).total_size < len(states):
        assert time.monotonic() < deadline, "artifact-store did not index the conversation"
        await asyncio.sleep(0.05)


async def error_of(awaitable: object) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    details = decode(caught.value)
    return caught.value.code(), details.reason, details.message


async def test_evaluate_scores_deterministically_and_announces(stack: Stack, bus: Bus) -> None:
    await publish_conversation(bus, stack, "conv-good", good=True)
    await publish_conversation(bus, stack, "conv-vague", good=False)
    good = await stack.evaluator.Evaluate(
        pb.EvaluateRequest(evaluator_id="offline_judge", conversation_id="conv-good")
    )
    assert good.score == 1.0
    assert dict(good.metrics) == {"score": 1.0, "helpfulness": 1.0, "tool_success": 1.0}
    assert good.judge_model == "offline/judge"
    assert good.branch_id == "conv-good-main"
    vague = await stack.evaluator.Evaluate(
        pb.EvaluateRequest(evaluator_id="gpt4_judge", conversation_id="conv-vague")
    )
    assert vague.score == 0.75  # answered, but without the tool's result
    assert vague.rationale.startswith("offline judge")

    # EvaluationCompleted is on JetStream, with msg id = evaluation id.
    raw = await bus.js.get_last_msg(EVALS.name, evaluation_completed_subject("conv-good"))
    assert raw.headers is not None
    assert raw.headers[MSG_ID_HEADER] == good.id
    completed = events_pb2.EvaluationCompleted.FromString(raw.data or b"")
    assert completed.evaluation == good

    # ... and the evaluation became an artifact, child of the last judged state.
    deadline = time.monotonic() + 5
    listed = artifacts_service_pb2.ListArtifactsRequest(
        conversation_id="conv-good", kind="evaluation"
    )
    while not (found := (await stack.artifacts.ListArtifacts(listed)).artifacts):
        assert time.monotonic() < deadline, "the evaluation artifact did not arrive"
        await asyncio.sleep(0.05)
    assert found[0].id == good.id
    assert list(found[0].parent_ids) == ["conv-good-s5"]
    assert found[0].produced_by == "evaluator"

    got = await stack.evaluator.GetEvaluation(pb.GetEvaluationRequest(id=good.id))
    assert got == good


async def test_request_id_returns_the_stored_evaluation(stack: Stack, bus: Bus) -> None:
    await publish_conversation(bus, stack, "conv-idem", good=True)
    request = pb.EvaluateRequest(
        evaluator_id="offline_judge", conversation_id="conv-idem", request_id="req-1"
    )
    first = await stack.evaluator.Evaluate(request)
    again = await stack.evaluator.Evaluate(request)
    assert again == first


async def test_list_evaluators(stack: Stack) -> None:
    response = await stack.evaluator.ListEvaluators(pb.ListEvaluatorsRequest())
    assert [(e.id, e.model) for e in response.evaluators] == [
        ("gpt4_judge", "offline/judge"),  # no provider key in tests
        ("offline_judge", "offline/judge"),
    ]
    assert list(response.evaluators[0].metrics) == ["score", "helpfulness", "tool_success"]
    page = await stack.evaluator.ListEvaluators(pb.ListEvaluatorsRequest(page_size=1))
    assert len(page.evaluators) == 1
    assert page.next_page_token


async def test_error_rows(stack: Stack, bus: Bus) -> None:
    await publish_conversation(bus, stack, "conv-err", good=True)
    code, reason, _ = await error_of(
        stack.evaluator.Evaluate(
            pb.EvaluateRequest(evaluator_id="nope", conversation_id="conv-err")
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "EVALUATOR_NOT_FOUND")
    code, reason, _ = await error_of(
        stack.evaluator.Evaluate(
            pb.EvaluateRequest(evaluator_id="offline_judge", conversation_id="never-seen")
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONVERSATION_NOT_FOUND")
    code, _, _ = await error_of(stack.evaluator.GetEvaluation(pb.GetEvaluationRequest(id="ev_x")))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, _ = await error_of(
        stack.evaluator.Evaluate(
            pb.EvaluateRequest(
                evaluator_id="offline_judge", conversation_id="conv-err", branch_id="b"
            )
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_nothing_to_judge_is_failed_precondition(stack: Stack, bus: Bus) -> None:
    settled = artifacts_pb2.Artifact(
        id="tx1", kind="transfer_settled", conversation_id="conv-tx", produced_by="ledger"
    )
    await bus.publish(artifact_subject("conv-tx", settled.kind), settled, settled.id)
    request = artifacts_service_pb2.ListArtifactsRequest(conversation_id="conv-tx")
    deadline = time.monotonic() + 5
    while not (await stack.artifacts.ListArtifacts(request)).artifacts:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    code, reason, _ = await error_of(
        stack.evaluator.Evaluate(
            pb.EvaluateRequest(evaluator_id="offline_judge", conversation_id="conv-tx")
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_TO_JUDGE")


async def test_rollouts_are_unimplemented_with_a_message(stack: Stack) -> None:
    code, _, message = await error_of(stack.rollouts.StartRollout(pb.StartRolloutRequest()))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert "rollouts arrive with the rollout feature (StartRollout" in message
    code, _, _ = await error_of(stack.rollouts.CompareRuns(pb.CompareRunsRequest()))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    watch = stack.rollouts.WatchRollout(pb.WatchRolloutRequest(id="r"))
    code, _, message = await error_of(watch.read())
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert "rollout feature" in message


async def test_artifact_store_down_is_unavailable(nats_server: NatsServer, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with evaluator_serving(nats_server.url, dead, tmp_path) as port:
        # A channel without the kit's UNAVAILABLE retries: one attempt is enough to see the code.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            stub = evaluator_service_pb2_grpc.EvaluatorServiceStub(plain)
            code, reason, _ = await error_of(
                stub.Evaluate(pb.EvaluateRequest(evaluator_id="offline_judge", conversation_id="c"))
            )
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "ARTIFACT_STORE_UNAVAILABLE")
