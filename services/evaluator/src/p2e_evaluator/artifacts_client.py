"""Reading a conversation from the artifact-store over gRPC (ArtifactService.ListArtifacts)."""

from __future__ import annotations

import logging

import grpc

from p2e_evaluator.transcript import ArtifactView
from p2e_kit.channels import caller_metadata, open_channel
from p2e_kit.errors import DependencyUnavailable
from p2engine.artifacts.v1 import artifacts_service_pb2, artifacts_service_pb2_grpc

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MAX_PAGES = 100


class ArtifactStoreClient:
    """An ArtifactSource over a lazily opened channel."""

    def __init__(self, address: str, *, deadline_seconds: float = 10.0) -> None:
        self.address = address
        self.deadline_seconds = deadline_seconds
        self._channel: grpc.aio.Channel | None = None
        self._metadata = caller_metadata("service", "evaluator")

    def _stub(self) -> artifacts_service_pb2_grpc.ArtifactServiceAsyncStub:
        if self._channel is None:
            self._channel = open_channel(self.address)
        return artifacts_service_pb2_grpc.ArtifactServiceStub(self._channel)

    async def conversation_artifacts(self, conversation_id: str) -> list[ArtifactView]:
        """Every artifact of the conversation, oldest first (envelopes; large payloads omitted)."""
        stub, found, token = self._stub(), [], ""
        for _ in range(MAX_PAGES):
            request = artifacts_service_pb2.ListArtifactsRequest(
                conversation_id=conversation_id, page_size=PAGE_SIZE, page_token=token
            )
            try:
                response = await stub.ListArtifacts(
                    request, timeout=self.deadline_seconds, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise DependencyUnavailable(
                    f"artifact-store at {self.address} failed: {exc.code().name} {exc.details()}",
                    reason="ARTIFACT_STORE_UNAVAILABLE",
                ) from exc
            found += [
                ArtifactView(
                    id=a.id,
                    kind=a.kind,
                    branch_id=a.branch_id,
                    parent_ids=tuple(a.parent_ids),
                    state_seq=a.state_seq,
                    sequence=a.sequence,
                    payload=a.payload,
                )
                for a in response.artifacts
            ]
            token = response.next_page_token
            if not token:
                break
        return found

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
