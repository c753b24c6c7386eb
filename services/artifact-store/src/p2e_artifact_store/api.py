"""ArtifactService: protos in, catalog call, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from p2e_artifact_store import codec
from p2e_artifact_store.catalog import Catalog
from p2engine.artifacts.v1 import artifacts_pb2, artifacts_service_pb2, artifacts_service_pb2_grpc

pb = artifacts_service_pb2


class ArtifactApi(artifacts_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def GetArtifact(
        self, request: pb.GetArtifactRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.Artifact:
        return codec.to_proto(await self.catalog.get(request.id))

    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListArtifactsResponse:
        page = await self.catalog.list_page(
            conversation_id=request.conversation_id,
            kind=request.kind,
            page_size=request.page_size,
            page_token=request.page_token,
            newest_first=request.newest_first,
        )
        return pb.ListArtifactsResponse(
            artifacts=[codec.to_proto(r) for r in page.artifacts],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def GetLineage(
        self, request: pb.GetLineageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLineageResponse:
        found = await self.catalog.lineage(request.id, request.depth)
        return pb.GetLineageResponse(artifacts=[codec.to_proto(r) for r in found])

    async def WatchArtifacts(
        self, request: pb.WatchArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[artifacts_pb2.Artifact]:
        watched = self.catalog.watch(
            conversation_id=request.conversation_id, after_sequence=request.after_sequence
        )
        async for record in watched:
            yield codec.to_proto(record)

    async def PutArtifact(
        self,
        request_iterator: AsyncIterator[pb.PutArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> artifacts_pb2.Artifact:
        header, chunks = await codec.split_put_stream(request_iterator)
        return codec.to_proto(await self.catalog.put(header, chunks))

    async def ExportArtifacts(
        self, request: pb.ExportArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[artifacts_pb2.Artifact]:
        exported = self.catalog.export(conversation_id=request.conversation_id, kind=request.kind)
        async for record in exported:
            yield codec.to_proto(record)
