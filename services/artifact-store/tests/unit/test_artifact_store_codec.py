"""Proto <-> record round trips and the PutArtifact stream protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from p2e_artifact_store import codec
from p2e_kit.errors import InvalidArgument
from p2engine.artifacts.v1 import artifacts_pb2, artifacts_service_pb2


def test_round_trip_keeps_every_field() -> None:
    message = artifacts_pb2.Artifact(
        id="a",
        kind="tool_call",
        conversation_id="c",
        branch_id="b",
        agent_id="agent_alpha",
        produced_by="orchestrator",
        parent_ids=["p1", "p2"],
        causation_id="cause",
        content_type="application/json",
        payload=b"{}",
        size_bytes=2,
        sequence=9,
        state_seq=3,
    )
    message.create_time.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    record = codec.from_proto(message)
    assert record.create_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    back = codec.to_proto(record)
    message.sequence = 0  # the store sets it, never the sender
    assert back == message


def test_garbage_and_empty_artifacts_are_undecodable() -> None:
    with pytest.raises(codec.UndecodableArtifact):
        codec.decode_bus_message(b"\xff\xff\xff")
    with pytest.raises(codec.UndecodableArtifact):
        codec.decode_bus_message(artifacts_pb2.Artifact(kind="x").SerializeToString())


async def _stream(
    *parts: artifacts_service_pb2.PutArtifactRequest,
) -> AsyncIterator[artifacts_service_pb2.PutArtifactRequest]:
    for part in parts:
        yield part


async def test_put_stream_needs_the_header_first() -> None:
    chunk = artifacts_service_pb2.PutArtifactRequest(chunk=b"x")
    with pytest.raises(InvalidArgument):
        await codec.split_put_stream(_stream(chunk))
    with pytest.raises(InvalidArgument):
        await codec.split_put_stream(_stream())


async def test_put_stream_rejects_a_second_header() -> None:
    header = artifacts_service_pb2.PutArtifactRequest(
        header=artifacts_pb2.Artifact(id="a", kind="k")
    )
    record, chunks = await codec.split_put_stream(_stream(header, header))
    assert record.id == "a"
    with pytest.raises(InvalidArgument):
        _ = [c async for c in chunks]
