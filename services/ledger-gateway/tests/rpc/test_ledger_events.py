"""Outbox -> JetStream: ledger.v1 events and artifacts, including after a NATS outage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from p2e_kit.bus import MSG_ID_HEADER, TYPE_HEADER, Bus, connect
from p2e_kit.natsd import free_port, start_nats_server
from p2engine.artifacts.v1 import artifacts_pb2
from p2engine.ledger.v1 import events_pb2
from p2engine.ledger.v1 import ledger_service_pb2 as pb

CONVERSATION = (("p2e-conversation", "conv-42"),)


async def collect(bus: Bus, stream: str, subject: str, count: int) -> list:
    """At least `count` messages of `subject` from the start of `stream` (5 s at most)."""
    sub = await bus.js.pull_subscribe(subject, stream=stream)
    found: list = []
    deadline = asyncio.get_running_loop().time() + 5
    while len(found) < count and asyncio.get_running_loop().time() < deadline:
        try:
            batch = await sub.fetch(count - len(found), timeout=0.5)
        except TimeoutError:
            continue
        for msg in batch:
            await msg.ack()
        found += batch
    await sub.unsubscribe()
    return found


async def wait_published(harness) -> None:
    """Poll GetDebugInfo until the outbox is empty (10 s at most)."""
    async with asyncio.timeout(10):
        pending = 1
        while pending:
            info = await harness.stub.GetDebugInfo(pb.GetDebugInfoRequest())
            pending = info.outbox_pending
            await asyncio.sleep(0.05 if pending else 0)


async def test_transfer_events_and_artifacts_reach_jetstream(
    make_settings, sqlite_url, nats_server, bus, serve_ledger
) -> None:
    settings = make_settings(sqlite_url, publish_events=True, nats_url=nats_server.url)
    async with serve_ledger(settings) as ledger:
        await ledger.init("alice", "bob", "boss", balance="1000")
        metadata = ledger.agent("alice") + CONVERSATION
        request = pb.CreateTransferRequest(to_agent="bob", amount="5", request_id="e1")
        settled = await ledger.stub.CreateTransfer(request, metadata=metadata)
        failed = await ledger.error(ledger.pay("bob", "alice", "5000", request_id="e2"))
        pending = await ledger.error(ledger.pay("boss", "alice", "250", request_id="e3"))
        await wait_published(ledger)

        messages = await collect(bus, "P2E_LEDGER", "p2e.ledger.>", 4)
        assert len(messages) == 4
        by_subject = {m.subject: m for m in messages}
        payer = by_subject["p2e.ledger.transfer_settled.alice"]
        assert payer.headers[MSG_ID_HEADER] == f"{settled.id}:transfer_settled"
        assert payer.headers[TYPE_HEADER] == "p2engine.ledger.v1.TransferSettled"
        event = events_pb2.TransferSettled.FromString(payer.data)
        assert (event.transfer.id, event.transfer.amount.amount) == (settled.id, "5.00")
        payee = by_subject["p2e.ledger.transfer_settled.bob"]
        assert payee.headers[MSG_ID_HEADER] == f"{settled.id}:transfer_settled:bob"
        failed_msg = by_subject["p2e.ledger.transfer_failed.bob"]
        assert (
            failed_msg.headers[MSG_ID_HEADER] == f"{failed.metadata['transfer_id']}:transfer_failed"
        )
        failed_event = events_pb2.TransferFailed.FromString(failed_msg.data)
        assert failed_event.transfer.failure_reason == "INSUFFICIENT_FUNDS"
        pending_msg = by_subject["p2e.ledger.transfer_pending.boss"]
        assert (
            events_pb2.TransferPending.FromString(pending_msg.data).transfer.id
            == (pending.metadata["approval_id"])
        )

        artifacts = await collect(bus, "P2E_ARTIFACTS", "p2e.artifacts.>", 3)
        assert len(artifacts) == 3
        by_subject = {m.subject: m for m in artifacts}
        art = artifacts_pb2.Artifact.FromString(
            by_subject["p2e.artifacts.conv-42.transfer_settled"].data
        )
        assert (art.kind, art.conversation_id, art.produced_by) == (
            "transfer_settled",
            "conv-42",
            "ledger-gateway",
        )
        assert (art.id, art.causation_id, art.content_type) == (
            f"{settled.id}:transfer_settled",
            "e1",
            "application/json",
        )
        assert json.loads(art.payload)["transfer"]["id"] == settled.id
        assert "p2e.artifacts.system.transfer_failed" in by_subject
        assert "p2e.artifacts.system.transfer_pending" in by_subject


async def test_approval_and_rejection_events(
    make_settings, sqlite_url, nats_server, bus, serve_ledger
) -> None:
    settings = make_settings(sqlite_url, publish_events=True, nats_url=nats_server.url)
    async with serve_ledger(settings) as ledger:
        await ledger.init("alice", "boss", balance="1000")
        first = await ledger.error(ledger.pay("boss", "alice", "300", request_id="a1"))
        second = await ledger.error(ledger.pay("boss", "alice", "400", request_id="a2"))
        approve = pb.ApproveTransferRequest(transfer_id=first.metadata["approval_id"])
        await ledger.stub.ApproveTransfer(approve, metadata=ledger.operator)
        reject = pb.RejectTransferRequest(transfer_id=second.metadata["approval_id"], reason="no")
        await ledger.stub.RejectTransfer(reject, metadata=ledger.operator)
        await wait_published(ledger)
        messages = await collect(bus, "P2E_LEDGER", "p2e.ledger.>", 6)
        subjects = sorted(m.subject for m in messages)
        assert subjects == [
            "p2e.ledger.transfer_approved.boss",
            "p2e.ledger.transfer_pending.boss",
            "p2e.ledger.transfer_pending.boss",
            "p2e.ledger.transfer_rejected.boss",
            "p2e.ledger.transfer_settled.alice",
            "p2e.ledger.transfer_settled.boss",
        ]
        approved = next(m for m in messages if "approved" in m.subject)
        assert events_pb2.TransferApproved.FromString(approved.data).approved_by == "operator:ops"
        rejected = next(m for m in messages if "rejected" in m.subject)
        assert events_pb2.TransferRejected.FromString(rejected.data).rejected_by == "operator:ops"


async def test_outbox_keeps_events_while_nats_is_down_and_publishes_later(
    make_settings, sqlite_url, serve_ledger, tmp_path: Path
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    settings = make_settings(sqlite_url, publish_events=True, nats_url=url)
    async with serve_ledger(settings) as ledger:  # starts and serves without NATS
        await ledger.init("alice", "bob")
        settled = await ledger.pay("alice", "bob", "1", request_id="down-1")
        await ledger.pay("bob", "alice", "2", request_id="down-2")
        await asyncio.sleep(0.4)  # a few failed attempts
        info = await ledger.stub.GetDebugInfo(pb.GetDebugInfoRequest())
        assert (info.connected, info.outbox_pending) == (True, 2)  # one row per transfer

        server = await asyncio.to_thread(start_nats_server, tmp_path / "late-js", port=port)
        try:
            await wait_published(ledger)
            bus = await connect(url, "pytest-late")
            try:
                messages = await collect(bus, "P2E_LEDGER", "p2e.ledger.>", 4)
                ids = {m.headers[MSG_ID_HEADER] for m in messages}
                assert f"{settled.id}:transfer_settled" in ids and len(ids) == 4
                artifacts = await collect(bus, "P2E_ARTIFACTS", "p2e.artifacts.>", 2)
                assert len(artifacts) == 2
            finally:
                await bus.close()
        finally:
            await ledger.app.close()  # stop the publisher before its server goes away
            server.stop()
