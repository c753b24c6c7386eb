"""Lost response: the transfer commits on the ledger but its reply never reaches the caller.

Two real ways to lose it:
- a client-side gRPC interceptor that lets the call reach the server, waits for the server's
  answer, then drops it and raises UNAVAILABLE to the caller instead;
- a TCP proxy on 127.0.0.1 that forwards the request, swallows the server's bytes and cuts the
  client's connection once the transfer is committed.
Either way, the retry with the same request_id returns the identical transfer, marked replayed,
and the money moved once. A business failure whose reply is lost replays the same failure,
even after the payer has been given the funds (a retry never flips an outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from p2e_kit.status import decode
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2_grpc
from p2engine.ledger.v1 import ledger_service_pb2 as pb

CREATE_TRANSFER = "/p2engine.ledger.v1.LedgerService/CreateTransfer"
NO_RETRIES = [("grpc.enable_retries", 0)]


class LoseReplies(grpc.aio.UnaryUnaryClientInterceptor):
    """Drops the next `armed` CreateTransfer answers (a response or an error) after the
    server produced them, and raises UNAVAILABLE instead; keeps what it dropped."""

    def __init__(self) -> None:
        self.armed = 0
        self.lost: list[Any] = []  # the swallowed Transfer, or the swallowed AioRpcError

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else method
        if name != CREATE_TRANSFER or not self.armed:
            return call
        self.armed -= 1
        try:
            self.lost.append(await call)  # the server answered: it has committed
        except grpc.aio.AioRpcError as exc:
            self.lost.append(exc)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="connection lost before the reply arrived (injected)",
        )


@contextlib.asynccontextmanager
async def lossy_stub(
    address: str,
) -> AsyncIterator[tuple[ledger_service_pb2_grpc.LedgerServiceStub, LoseReplies]]:
    lose = LoseReplies()
    async with grpc.aio.insecure_channel(address, interceptors=[lose]) as channel:
        yield ledger_service_pb2_grpc.LedgerServiceStub(channel), lose


def transfer_request(to: str, amount: str, request_id: str) -> pb.CreateTransferRequest:
    return pb.CreateTransferRequest(to_agent=to, amount=amount, request_id=request_id, reason="x")


async def history(ledger, agent: str) -> list[ledger_pb2.Transfer]:
    page = await ledger.stub.ListTransactions(
        pb.ListTransactionsRequest(agent_id=agent, page_size=100)
    )
    return list(page.transfers)


def without_replayed(transfer: ledger_pb2.Transfer) -> ledger_pb2.Transfer:
    copy = ledger_pb2.Transfer()
    copy.CopyFrom(transfer)
    copy.replayed = False
    return copy


async def test_lost_reply_of_a_settled_transfer_replays_the_same_transfer(ledger) -> None:
    async with lossy_stub(ledger.address) as (stub, lose):
        lose.armed = 1
        request = transfer_request("bob", "12.34", "lost-1")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTransfer(request, metadata=ledger.agent("alice"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        (original,) = lose.lost
        assert original.status == ledger_pb2.TRANSFER_STATUS_SETTLED and not original.replayed
        # The caller cannot know; the ledger already moved the money.
        assert (await ledger.balance("alice"), await ledger.balance("bob")) == ("87.66", "112.34")

        retried = await stub.CreateTransfer(request, metadata=ledger.agent("alice"))

    assert retried.replayed
    assert without_replayed(retried) == original  # same id, amounts, balance after, times
    assert (retried.id, retried.from_balance_after.amount) == (original.id, "87.66")
    assert (await ledger.balance("alice"), await ledger.balance("bob")) == ("87.66", "112.34")
    (stored,) = await history(ledger, "alice")
    assert stored == original
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert (metrics.transaction_count, metrics.volume.amount) == (1, "12.34")
    assert metrics.total_supply == metrics.total_minted


async def test_lost_reply_of_a_refusal_replays_the_refusal_even_once_funds_arrive(
    ledger,
) -> None:
    async with lossy_stub(ledger.address) as (stub, lose):
        lose.armed = 1
        request = transfer_request("alice", "150", "lost-2")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTransfer(request, metadata=ledger.agent("carol"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        (lost,) = lose.lost
        first = decode(lost)
        assert (first.code, first.reason) == ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")

        await ledger.pay("bob", "carol", "100", request_id="top-up")  # carol now has 200
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.CreateTransfer(request, metadata=ledger.agent("carol"))

    retry = decode(again.value)
    assert (retry.code, retry.reason, retry.message) == (first.code, first.reason, first.message)
    assert retry.metadata["transfer_id"] == first.metadata["transfer_id"]
    assert (first.metadata["replayed"], retry.metadata["replayed"]) == ("false", "true")
    assert (await ledger.balance("carol"), await ledger.balance("alice")) == ("200.00", "100.00")


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream`. While `swallow` is set, what the server
    sends is dropped; `cut()` then aborts the client's connections (a network failure)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.swallow = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._transports += [writer.transport, up_writer.transport]
        for source, sink, downstream in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(source, sink, downstream=downstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if downstream and self.swallow:
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()


async def until_answered(call: Callable[[], Awaitable[Any]], attempts: int = 50) -> Any:
    """What a careful client does: re-send (same request) while the network is down."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        await asyncio.sleep(0.05)
    return await call()


async def test_connection_cut_after_the_commit_then_retry_replays(ledger) -> None:
    port = int(ledger.address.rsplit(":", 1)[1])
    async with CuttingProxy(port) as proxy:
        target = f"127.0.0.1:{proxy.port}"
        async with grpc.aio.insecure_channel(target, options=NO_RETRIES) as channel:
            stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
            await stub.GetBalance(pb.GetBalanceRequest(agent_id="alice"))  # connected
            request = transfer_request("carol", "7.5", "cut-1")
            proxy.swallow = True
            call = asyncio.ensure_future(
                stub.CreateTransfer(request, metadata=ledger.agent("alice"), timeout=10)
            )
            for _ in range(500):  # watch the ledger directly until it committed
                if await history(ledger, "alice"):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the answer is on its way into the proxy
            assert not call.done()
            proxy.cut()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            proxy.swallow = False  # the network is back: retry until the channel reconnects
            retried = await until_answered(
                lambda: stub.CreateTransfer(request, metadata=ledger.agent("alice"), timeout=10)
            )

    (stored,) = await history(ledger, "alice")
    assert retried.replayed and without_replayed(retried) == stored
    assert (retried.amount.amount, retried.from_balance_after.amount) == ("7.50", "92.50")
    assert (await ledger.balance("alice"), await ledger.balance("carol")) == ("92.50", "107.50")
    metrics = await ledger.stub.GetMetrics(pb.GetMetricsRequest())
    assert metrics.transaction_count == 1
