"""LedgerService served as the ledger-gateway serves it, over a ledger that decides and
stores nothing: what a transfer's call costs without the ledger behind it.

    P2E_NO_LEDGER_PORT=50123 python -m no_ledger_server   # bench/ on PYTHONPATH (bench/ledger.py
                                                          # starts it itself)

`CreateTransfer` runs the gateway's own servicer (`LedgerApi`: the caller and conversation
read from the metadata, the answer converted to protobuf) on the kit's server (the error
interceptor, health, reflection), and answers a settled Transfer built from the request, of
the size a real one has. What a real transfer costs beyond this (validation, the batch, the
writer process, the SQL, the events) is the ledger's; what this costs beyond the echo
(`Health.Check` on the same server) is the shape of the call: a request with metadata in, a
Transfer out, a handler that awaits.
"""

from __future__ import annotations

import asyncio
import os
import time

from p2e_kit.channels import Caller
from p2e_kit.grpc_server import Registration, create_server, mark_serving
from p2e_ledger_gateway.api import LedgerApi
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.records import Status, TransferRecord
from p2engine.ledger.v1 import ledger_service_pb2_grpc

SERVICE_NAME = "p2engine.ledger.v1.LedgerService"
BALANCE_AFTER = 99_999_999  # minor units: a balance of the bench's order


class NoLedger:
    """What `LedgerApi.CreateTransfer` needs of a ledger, with nothing decided or stored: the
    transfer settles as asked, once the handler has awaited (as a real one awaits its batch)."""

    def __init__(self) -> None:
        self.currency = Currency()
        self._serial = 0

    async def create_transfer(
        self,
        caller: Caller,
        *,
        from_agent: str,
        to_agent: str,
        amount: str,
        reason: str,
        request_id: str,
        conversation_id: str = "",
    ) -> TransferRecord:
        await asyncio.sleep(0)
        self._serial += 1
        now = time.time_ns() // 1000
        return TransferRecord(
            id=f"tr_{now:012x}{self._serial:020x}",
            request_id=request_id,
            from_agent=from_agent or caller.id,
            to_agent=to_agent,
            amount=self.currency.parse(amount),
            reason=reason,
            status=Status.SETTLED,
            failure_reason="",
            failure_detail="",
            initiated_by=str(caller),
            conversation_id=conversation_id,
            create_time=now,
            settle_time=now,
            from_balance_after=BALANCE_AFTER,
        )


async def serve(port: int) -> None:
    api = LedgerApi(NoLedger())  # type: ignore[arg-type]
    registration = Registration(
        ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server, api, SERVICE_NAME
    )
    server, _, health = create_server([registration], address=f"127.0.0.1:{port}")
    await server.start()
    await mark_serving(health, [SERVICE_NAME])
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=None)


if __name__ == "__main__":
    asyncio.run(serve(int(os.environ["P2E_NO_LEDGER_PORT"])))
