"""ArtifactService over a real socket, fed through a real nats-server (JetStream)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from p2e_artifact_store.config import Settings
from p2e_artifact_store.server import App, running
from p2e_kit.bus import ARTIFACT_STORE_INDEX, MSG_ID_HEADER, Bus, artifact_subject
from p2e_kit.channels import open_channel
from p2e_kit.natsd import NatsServer, free_port
from p2e_kit.service import grpc_serving
from p2e_kit.status import decode
from p2engine.artifacts.v1 import artifacts_pb2, artifacts_service_pb2, artifacts_service_pb2_grpc

pb = artifacts_service_pb2


@dataclass
class Running:
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub
    settings: Settings


def make_settings(nats_url: str, sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(
        nats_url=nats_url,
        database_url=sqlite_url,
        data_dir=tmp_path,
        port=0,
        ingest_fetch_timeout_seconds=0.2,
    )


@pytest.fixture
async def svc(nats_server: NatsServer, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(nats_server.url, sqlite_url, tmp_path)
    async with running(settings) as app:
        async with grpc_serving(app.registrations(), address="127.0.0.1:0") as (port, _, _):
            async with open_channel(f"127.0.0.1:{port}") as channel:
                yield Running(artifacts_service_pb2_grpc.ArtifactServiceStub(channel), settings)


def artifact(ident: str, conv: str = "conv1", kind: str = "user_message", **kw: object):
    return artifacts_pb2.Artifact(
        id=ident,
        kind=kind,
        conversation_id=conv,
        produced_by="pytest",
        content_type="application/json",
        payload=kw.pop("payload", f'{{"text": "{ident}"}}'.encode()),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def publish(bus: Bus, message: artifacts_pb2.Artifact, msg_id: str | None = None) -> None:
    await bus.publish(
        artifact_subject(message.conversation_id, message.kind), message, msg_id or message.id
    )


async def until(check: Callable[[], object], *, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def ids_of(stub: artifacts_service_pb2_grpc.ArtifactServiceStub, **kw: object) -> list[str]:
    response = await stub.ListArtifacts(pb.ListArtifactsRequest(page_size=1000, **kw))  # type: ignore[arg-type]
    return [a.id for a in response.artifacts]


async def has(stub: artifacts_service_pb2_grpc.ArtifactServiceStub, n: int) -> bool:
    return len(await ids_of(stub)) >= n


async def test_published_artifacts_are_listed(svc: Running, bus: Bus) -> None:
    for i in range(3):
        await publish(bus, artifact(f"s{i}", state_seq=i + 1))
    await publish(bus, artifact("other", conv="conv2"))
    await until(lambda: has(svc.stub, 4))
    response = await svc.stub.ListArtifacts(pb.ListArtifactsRequest(conversation_id="conv1"))
    assert [a.id for a in response.artifacts] == ["s0", "s1", "s2"]
    assert response.total_size == 3
    assert [a.state_seq for a in response.artifacts] == [1, 2, 3]
    assert all(a.sequence > 0 for a in response.artifacts)
    got = await svc.stub.GetArtifact(pb.GetArtifactRequest(id="s1"))
    assert got.payload == b'{"text": "s1"}'
    assert got.produced_by == "pytest"


async def test_duplicate_publish_is_one_row(svc: Running, bus: Bus) -> None:
    await publish(bus, artifact("dup"))
    await publish(bus, artifact("dup"))  # dropped by JetStream's duplicate window
    await publish(bus, artifact("dup"), msg_id="dup-retry")  # reaches the store: idempotent
    await publish(bus, artifact("dup", payload=b"changed"), msg_id="dup-other")  # logged, acked
    await publish(bus, artifact("marker"))
    await until(lambda: has(svc.stub, 2))
    await asyncio.sleep(0.3)
    assert await ids_of(svc.stub) == ["dup", "marker"]
    got = await svc.stub.GetArtifact(pb.GetArtifactRequest(id="dup"))
    assert got.payload == b'{"text": "dup"}'


async def test_undecodable_message_is_terminated(svc: Running, bus: Bus) -> None:
    await bus.js.publish(
        artifact_subject("conv1", "junk"), b"\xff\xfe not a proto", headers={MSG_ID_HEADER: "j1"}
    )
    await publish(bus, artifact("after-junk"))
    await until(lambda: has(svc.stub, 1))

    async def settled() -> bool:
        info = await bus.js.consumer_info(
            ARTIFACT_STORE_INDEX.stream.name, ARTIFACT_STORE_INDEX.durable
        )
        return info.num_ack_pending == 0 and info.num_pending == 0

    await until(settled)
    assert await ids_of(svc.stub) == ["after-junk"]


async def test_consumer_restart_resumes_without_loss(
    nats_server: NatsServer, bus: Bus, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(nats_server.url, sqlite_url, tmp_path)
    async with running(settings) as app:
        for i in range(5):
            await publish(bus, artifact(f"before{i}"))
        await until(lambda: _count(app, 5))
    for i in range(5):  # published while the store is down
        await publish(bus, artifact(f"during{i}"))
    async with running(settings) as app:
        await until(lambda: _count(app, 10))
        async with grpc_serving(app.registrations(), address="127.0.0.1:0") as (port, _, _):
            async with open_channel(f"127.0.0.1:{port}") as channel:
                stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
                listed = await ids_of(stub)
    assert listed == [f"before{i}" for i in range(5)] + [f"during{i}" for i in range(5)]


async def _count(app: App, n: int) -> bool:
    return (await app.catalog.list_page(page_size=1000)).total_size >= n


async def test_watch_replays_then_streams_live(svc: Running, bus: Bus) -> None:
    await publish(bus, artifact("w1"))
    await publish(bus, artifact("w2"))
    await publish(bus, artifact("x1", conv="conv2"))
    await until(lambda: has(svc.stub, 3))
    call = svc.stub.WatchArtifacts(pb.WatchArtifactsRequest(conversation_id="conv1"))
    first = await asyncio.wait_for(call.read(), 5)
    second = await asyncio.wait_for(call.read(), 5)
    assert [first.id, second.id] == ["w1", "w2"]
    await publish(bus, artifact("x2", conv="conv2"))
    await publish(bus, artifact("w3"))
    live = await asyncio.wait_for(call.read(), 5)
    assert live.id == "w3"
    call.cancel()
    # Resuming after the last seen sequence yields only what came next.
    resumed = svc.stub.WatchArtifacts(
        pb.WatchArtifactsRequest(conversation_id="conv1", after_sequence=second.sequence)
    )
    assert (await asyncio.wait_for(resumed.read(), 5)).id == "w3"
    resumed.cancel()


async def test_put_large_artifact_round_trip(svc: Running) -> None:
    payload = os.urandom(200 * 1024)
    header = artifacts_pb2.Artifact(
        id="big1", kind="report", conversation_id="conv1", content_type="application/octet-stream"
    )

    async def requests() -> AsyncIterator[pb.PutArtifactRequest]:
        yield pb.PutArtifactRequest(header=header)
        for start in range(0, len(payload), 64 * 1024):
            yield pb.PutArtifactRequest(chunk=payload[start : start + 64 * 1024])

    stored = await svc.stub.PutArtifact(requests())
    assert stored.blob_ref.startswith("blob:")
    assert stored.size_bytes == len(payload)
    assert stored.sequence > 0
    got = await svc.stub.GetArtifact(pb.GetArtifactRequest(id="big1"))
    assert got.payload == payload
    listed = await svc.stub.ListArtifacts(pb.ListArtifactsRequest(conversation_id="conv1"))
    assert listed.artifacts[0].payload == b""  # lists carry the reference, not the blob
    assert listed.artifacts[0].blob_ref == stored.blob_ref
    exported = [a async for a in svc.stub.ExportArtifacts(pb.ExportArtifactsRequest())]
    assert exported[0].payload == payload
    again = await svc.stub.PutArtifact(requests())
    assert again.sequence == stored.sequence

    async def other() -> AsyncIterator[pb.PutArtifactRequest]:
        yield pb.PutArtifactRequest(header=header)
        yield pb.PutArtifactRequest(chunk=b"different")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.stub.PutArtifact(other())
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_lineage_over_rpc(svc: Running, bus: Bus) -> None:
    await publish(bus, artifact("l1"))
    await publish(bus, artifact("l2", parent_ids=["l1"]))
    await publish(bus, artifact("l3", parent_ids=["l2"]))
    await until(lambda: has(svc.stub, 3))
    response = await svc.stub.GetLineage(pb.GetLineageRequest(id="l3", depth=1))
    assert [a.id for a in response.artifacts] == ["l3", "l2"]
    response = await svc.stub.GetLineage(pb.GetLineageRequest(id="l3"))
    assert [a.id for a in response.artifacts] == ["l3", "l2", "l1"]


async def test_paging_over_rpc(svc: Running, bus: Bus) -> None:
    for i in range(5):
        await publish(bus, artifact(f"p{i}"))
    await until(lambda: has(svc.stub, 5))
    first = await svc.stub.ListArtifacts(pb.ListArtifactsRequest(page_size=2, newest_first=True))
    assert [a.id for a in first.artifacts] == ["p4", "p3"]
    assert first.total_size == 5
    second = await svc.stub.ListArtifacts(
        pb.ListArtifactsRequest(page_size=2, newest_first=True, page_token=first.next_page_token)
    )
    assert [a.id for a in second.artifacts] == ["p2", "p1"]


async def _error_of(awaitable: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    details = decode(caught.value)
    return caught.value.code(), details.reason


async def test_error_rows(svc: Running) -> None:
    stub = svc.stub
    assert await _error_of(stub.GetArtifact(pb.GetArtifactRequest(id="nope"))) == (
        grpc.StatusCode.NOT_FOUND,
        "ARTIFACT_NOT_FOUND",
    )
    code, _ = await _error_of(stub.ListArtifacts(pb.ListArtifactsRequest(page_token="bad!")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _error_of(stub.GetLineage(pb.GetLineageRequest(id="nope")))
    assert code == grpc.StatusCode.NOT_FOUND

    watch = stub.WatchArtifacts(pb.WatchArtifactsRequest(after_sequence=-1))
    code, _ = await _error_of(watch.read())
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    async def chunk_first() -> AsyncIterator[pb.PutArtifactRequest]:
        yield pb.PutArtifactRequest(chunk=b"x")

    code, _ = await _error_of(stub.PutArtifact(chunk_first()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_main_exits_2_with_one_line_when_nats_is_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "P2E_ARTIFACTS_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "P2E_ARTIFACTS_DATA_DIR": str(tmp_path),
        "P2E_ARTIFACTS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "p2e_artifact_store"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "cannot reach nats-server" in lines[0]
