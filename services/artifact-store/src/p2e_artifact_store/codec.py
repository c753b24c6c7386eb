"""artifacts.v1 protos <-> ArtifactRecord, and the PutArtifact stream protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from p2e_artifact_store.model import ArtifactRecord
from p2e_kit.errors import InvalidArgument
from p2engine.artifacts.v1 import artifacts_pb2, artifacts_service_pb2


class UndecodableArtifact(ValueError):
    """A bus message that is not an artifacts.v1.Artifact (or has no id)."""


def from_proto(message: artifacts_pb2.Artifact) -> ArtifactRecord:
    created = None
    if message.HasField("create_time"):
        created = message.create_time.ToDatetime(tzinfo=UTC)
    return ArtifactRecord(
        id=message.id,
        kind=message.kind,
        conversation_id=message.conversation_id,
        branch_id=message.branch_id,
        agent_id=message.agent_id,
        produced_by=message.produced_by,
        parent_ids=tuple(message.parent_ids),
        causation_id=message.causation_id,
        create_time=created,
        content_type=message.content_type,
        payload=message.payload,
        blob_ref=message.blob_ref,
        size_bytes=message.size_bytes,
        state_seq=message.state_seq,
    )


def to_proto(record: ArtifactRecord) -> artifacts_pb2.Artifact:
    message = artifacts_pb2.Artifact(
        id=record.id,
        kind=record.kind,
        conversation_id=record.conversation_id,
        branch_id=record.branch_id,
        agent_id=record.agent_id,
        produced_by=record.produced_by,
        parent_ids=list(record.parent_ids),
        causation_id=record.causation_id,
        content_type=record.content_type,
        payload=record.payload,
        blob_ref=record.blob_ref,
        size_bytes=record.size_bytes,
        sequence=record.sequence,
        state_seq=record.state_seq,
    )
    if record.create_time is not None:
        stamp = Timestamp()
        stamp.FromDatetime(record.create_time)
        message.create_time.CopyFrom(stamp)
    return message


def decode_bus_message(data: bytes) -> ArtifactRecord:
    """An artifact from the bus; raises UndecodableArtifact for poison messages."""
    message = artifacts_pb2.Artifact()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise UndecodableArtifact(f"not an artifacts.v1.Artifact: {exc}") from exc
    if not message.id or not message.kind:
        raise UndecodableArtifact("artifact without id or kind")
    return from_proto(message)


async def split_put_stream(
    requests: AsyncIterator[artifacts_service_pb2.PutArtifactRequest],
) -> tuple[ArtifactRecord, AsyncIterator[bytes]]:
    """The header (first message) and an iterator over the chunks that follow it."""
    iterator = aiter(requests)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise InvalidArgument("PutArtifact needs a header message", field="header") from None
    if first.WhichOneof("part") != "header":
        raise InvalidArgument("the first PutArtifact message must be the header", field="header")

    async def chunks() -> AsyncIterator[bytes]:
        async for request in iterator:
            if request.WhichOneof("part") != "chunk":
                raise InvalidArgument("only chunks may follow the header", field="chunk")
            yield request.chunk

    return from_proto(first.header), chunks()
