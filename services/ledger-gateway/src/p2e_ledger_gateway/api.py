"""LedgerService servicer: protobuf in, domain call, protobuf out."""

from __future__ import annotations

import grpc

from p2e_kit.channels import CONVERSATION_KEY, Caller, metadata_value, parse_caller
from p2e_ledger_gateway import convert
from p2e_ledger_gateway.ledger import Ledger
from p2engine.common.v1 import common_pb2
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2_grpc
from p2engine.ledger.v1 import ledger_service_pb2 as pb

CALLER_KINDS = {
    "agent": common_pb2.CALLER_KIND_AGENT,
    "operator": common_pb2.CALLER_KIND_OPERATOR,
    "service": common_pb2.CALLER_KIND_SERVICE,
}


def _caller(context: grpc.aio.ServicerContext) -> Caller:
    return parse_caller(context.invocation_metadata())


def _conversation(context: grpc.aio.ServicerContext) -> str:
    return metadata_value(context.invocation_metadata(), CONVERSATION_KEY)


class LedgerApi(ledger_service_pb2_grpc.LedgerServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.currency = ledger.currency

    async def InitWallets(self, request: pb.InitWalletsRequest, context) -> pb.InitWalletsResponse:
        found, created = await self.ledger.init_wallets(
            _caller(context), list(request.agent_ids), request.initial_balance, request.request_id
        )
        return pb.InitWalletsResponse(
            wallets=[convert.wallet(w, self.currency) for w in found], created_agent_ids=created
        )

    async def GetBalance(self, request: pb.GetBalanceRequest, context) -> ledger_pb2.Wallet:
        found = await self.ledger.get_balance(_caller(context), request.agent_id)
        return convert.wallet(found, self.currency)

    async def CreateTransfer(
        self, request: pb.CreateTransferRequest, context
    ) -> ledger_pb2.Transfer:
        record = await self.ledger.create_transfer(
            _caller(context),
            from_agent=request.from_agent,
            to_agent=request.to_agent,
            amount=request.amount,
            reason=request.reason,
            request_id=request.request_id,
            conversation_id=_conversation(context),
        )
        return convert.transfer(record, self.currency)

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context
    ) -> pb.ListTransactionsResponse:
        records, token = await self.ledger.list_transactions(
            _caller(context), request.agent_id, request.page_size, request.page_token
        )
        return pb.ListTransactionsResponse(
            transfers=[convert.transfer(r, self.currency) for r in records], next_page_token=token
        )

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context
    ) -> pb.ListAuditEventsResponse:
        since = request.since.ToMicroseconds() if request.HasField("since") else None
        entries, token = await self.ledger.list_audit_events(
            request.page_size, request.page_token, since, request.event_type
        )
        return pb.ListAuditEventsResponse(
            events=[convert.audit_event(e) for e in entries], next_page_token=token
        )

    async def VerifyAudit(self, request: pb.VerifyAuditRequest, context) -> pb.VerifyAuditResponse:
        result = await self.ledger.verify_audit()
        return pb.VerifyAuditResponse(
            valid=result.valid,
            checked=result.checked,
            first_bad_sequence=result.first_bad_sequence,
            problem=result.problem,
        )

    async def GetMetrics(self, request: pb.GetMetricsRequest, context) -> pb.GetMetricsResponse:
        m = await self.ledger.metrics()
        return pb.GetMetricsResponse(
            total_supply=convert.money(m.total_supply, self.currency),
            total_minted=convert.money(m.total_minted, self.currency),
            volume=convert.money(m.volume, self.currency),
            transaction_count=m.transaction_count,
            wallet_count=m.wallet_count,
            failed_count=m.failed_count,
            pending_count=m.pending_count,
        )

    async def GetOverview(self, request: pb.GetOverviewRequest, context) -> pb.GetOverviewResponse:
        found = await self.ledger.overview()
        return pb.GetOverviewResponse(wallets=[convert.wallet(w, self.currency) for w in found])

    async def GetDebugInfo(
        self, request: pb.GetDebugInfoRequest, context
    ) -> pb.GetDebugInfoResponse:
        caller = _caller(context)
        info = await self.ledger.debug_info()
        return pb.GetDebugInfoResponse(
            backend=info.backend,
            endpoint=info.endpoint,
            connected=info.connected,
            audit_head_sequence=info.audit_head_sequence,
            audit_head_hash=info.audit_head_hash,
            asset=self.currency.asset,
            scale=self.currency.scale,
            outbox_pending=info.outbox_pending,
            transfer_batches=info.transfer_batches,
            batched_transfers=info.batched_transfers,
            caller=common_pb2.Caller(
                kind=CALLER_KINDS.get(caller.kind, common_pb2.CALLER_KIND_UNSPECIFIED),
                id=caller.id,
            ),
        )

    async def ApproveTransfer(
        self, request: pb.ApproveTransferRequest, context
    ) -> ledger_pb2.Transfer:
        record = await self.ledger.approve(
            _caller(context), request.transfer_id, request.request_id
        )
        return convert.transfer(record, self.currency)

    async def RejectTransfer(
        self, request: pb.RejectTransferRequest, context
    ) -> ledger_pb2.Transfer:
        record = await self.ledger.reject(
            _caller(context), request.transfer_id, request.reason, request.request_id
        )
        return convert.transfer(record, self.currency)

    async def FreezeWallet(self, request: pb.FreezeWalletRequest, context) -> ledger_pb2.Wallet:
        found = await self.ledger.freeze(
            _caller(context), request.agent_id, request.reason, request.request_id
        )
        return convert.wallet(found, self.currency)

    async def UnfreezeWallet(self, request: pb.UnfreezeWalletRequest, context) -> ledger_pb2.Wallet:
        found = await self.ledger.freeze(
            _caller(context), request.agent_id, "", request.request_id, frozen=False
        )
        return convert.wallet(found, self.currency)
