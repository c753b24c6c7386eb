"""Streams are declared idempotently and publishes deduplicate by Nats-Msg-Id (real nats-server)."""

from __future__ import annotations

import pytest

from p2e_kit.bus import (
    ARTIFACTS,
    STREAMS,
    TOOL_RUNNER_EXEC,
    TYPE_HEADER,
    connect,
    tool_exec_subject,
)
from p2e_kit.errors import DependencyUnavailable
from p2e_kit.natsd import free_port
from p2engine.tools.v1 import events_pb2


async def test_streams_exist_and_ensure_is_idempotent(bus):
    await bus.ensure_streams()
    for spec in STREAMS:
        info = await bus.js.stream_info(spec.name)
        assert info.config.subjects == list(spec.subjects)


async def test_publish_deduplicates_on_msg_id(bus):
    msg = events_pb2.ToolExecutionRequested(call_id="c1", tool_name="get_weather")
    first = await bus.publish(tool_exec_subject("get_weather"), msg, "c1")
    again = await bus.publish(tool_exec_subject("get_weather"), msg, "c1")
    assert again.duplicate and not first.duplicate
    await bus.ensure_consumer(TOOL_RUNNER_EXEC)
    sub = await bus.js.pull_subscribe_bind(TOOL_RUNNER_EXEC.durable, TOOL_RUNNER_EXEC.stream.name)
    [got] = await sub.fetch(1, timeout=2)
    assert got.headers[TYPE_HEADER] == "p2engine.tools.v1.ToolExecutionRequested"
    assert events_pb2.ToolExecutionRequested.FromString(got.data).call_id == "c1"
    await got.ack()


async def test_unreachable_nats_is_dependency_unavailable():
    with pytest.raises(DependencyUnavailable, match="cannot reach nats-server"):
        await connect(f"nats://127.0.0.1:{free_port()}", "pytest", connect_timeout=0.5)


def test_artifact_stream_keeps_a_duplicate_window():
    assert ARTIFACTS.config().duplicate_window == 120.0


async def test_publish_fails_at_once_while_disconnected(nats_server):
    from nats.errors import ConnectionReconnectingError

    bus = await connect(nats_server.url, "pytest")
    msg = events_pb2.ToolExecutionRequested(call_id="c2")

    async def publish_until_refused() -> None:
        for _ in range(100):  # until the client notices the server is gone
            try:
                await bus.publish(tool_exec_subject("x"), msg, "c2", ack_timeout=0.2)
            except TimeoutError:  # sent before the client noticed: no ack
                continue

    try:
        nats_server.stop()
        with pytest.raises(ConnectionReconnectingError):
            await publish_until_refused()
    finally:
        await bus.nc.close()


def test_subject_tokens_are_safe():
    from p2e_kit.bus import artifact_subject, ledger_subject

    assert artifact_subject("conv_1", "tool_call") == "p2e.artifacts.conv_1.tool_call"
    assert ledger_subject("transfer_settled", "a.b *>c") == "p2e.ledger.transfer_settled.a_b___c"
    assert artifact_subject("", "x") == "p2e.artifacts._.x"


async def test_publish_batch_acks_each_message_in_order(bus):
    from nats.js.errors import NoStreamResponseError

    await bus.ensure_streams()
    body = events_pb2.ToolExecutionRequested(call_id="b1").SerializeToString()
    kind = "p2engine.tools.v1.ToolExecutionRequested"
    batch = [(tool_exec_subject("get_weather"), body, kind, f"batch-{n}") for n in range(50)]
    batch.insert(10, ("p2e.nowhere.at.all", body, kind, "lost"))  # no stream has it
    batch.append((tool_exec_subject("get_weather"), body, kind, "batch-3"))  # a repeat
    outcomes = await bus.publish_batch(batch)
    assert isinstance(outcomes[10], NoStreamResponseError)
    acks = [o for n, o in enumerate(outcomes) if n != 10]
    assert not any(isinstance(a, BaseException) for a in acks)
    assert [a.seq for a in acks[:50]] == sorted(a.seq for a in acks[:50])  # stored in order
    assert acks[-1].duplicate and not any(a.duplicate for a in acks[:50])
    assert await bus.publish_batch([]) == []
    single = await bus.publish_bytes(tool_exec_subject("get_weather"), body, kind, "one")
    assert single.seq == acks[49].seq + 1


async def test_acks_are_read_inline_and_still_after_a_reconnect(tmp_path):
    import asyncio

    from p2e_kit.natsd import start_nats_server

    server = start_nats_server(tmp_path / "js")
    port = server.port
    bus = await connect(server.url, "pytest")
    try:
        await bus.ensure_streams()
        body = events_pb2.ToolExecutionRequested(call_id="r1").SerializeToString()
        kind = "p2engine.tools.v1.ToolExecutionRequested"
        batch = [(tool_exec_subject("get_weather"), body, kind, f"inline-{n}") for n in range(5)]
        first = await bus.publish_batch(batch)
        assert [a.seq for a in first] == list(range(first[0].seq, first[0].seq + 5))
        [subscription] = [  # the ack inbox: no Msg of these acks went through its queue
            s for s in bus.nc._subs.values() if s.subject == f"{bus._ack_prefix}.*"
        ]
        assert subscription._pending_queue.qsize() == 0 and subscription._received == 0

        server.stop()
        server = await asyncio.to_thread(start_nats_server, tmp_path / "js", port=port)
        for _ in range(100):  # until the client has reconnected (and subscribed again)
            if bus.nc.is_connected:
                break
            await asyncio.sleep(0.1)
        again = [(tool_exec_subject("get_weather"), body, kind, f"inline-{n}") for n in range(5, 8)]
        second = await bus.publish_batch(again)
        assert not any(isinstance(a, BaseException) for a in second), second
        assert [a.seq for a in second] == [first[-1].seq + n for n in (1, 2, 3)]
    finally:
        await bus.nc.close()
        server.stop()


async def test_an_ack_that_cannot_be_read_is_logged_and_the_connection_goes_on(bus, caplog):
    await bus.ensure_streams()
    body = events_pb2.ToolExecutionRequested(call_id="u1").SerializeToString()
    kind = "p2engine.tools.v1.ToolExecutionRequested"
    reader = bus._read_ack

    def broken(data: bytes, headers: dict[str, str] | None) -> object:
        raise RuntimeError("unreadable")

    bus._read_ack = broken
    [lost] = await bus.publish_batch(
        [(tool_exec_subject("x"), body, kind, "unreadable-0")], ack_timeout=0.3
    )
    assert isinstance(lost, TimeoutError)
    assert "a PubAck could not be read" in caplog.text
    bus._read_ack = reader
    again = await bus.publish_bytes(tool_exec_subject("x"), body, kind, "unreadable-1")
    assert bus.nc.is_connected and again.seq > 0


async def test_publish_batch_times_out_only_the_messages_without_an_ack(bus):
    await bus.ensure_streams()
    silent = await bus.nc.subscribe("p2e.silent.listener")  # a responder that never acks
    body = events_pb2.ToolExecutionRequested(call_id="t1").SerializeToString()
    kind = "p2engine.tools.v1.ToolExecutionRequested"
    batch = [
        (tool_exec_subject("get_weather"), body, kind, "timeout-0"),
        ("p2e.silent.listener", body, kind, "timeout-1"),
        (tool_exec_subject("get_weather"), body, kind, "timeout-2"),
    ]
    first, lost, last = await bus.publish_batch(batch, ack_timeout=0.3)
    assert not isinstance(first, BaseException) and not isinstance(last, BaseException)
    assert last.seq == first.seq + 1
    assert isinstance(lost, TimeoutError) and "no PubAck within 0.3s" in str(lost)
    await silent.unsubscribe()
    again = await bus.publish_bytes(tool_exec_subject("get_weather"), body, kind, "timeout-3")
    assert again.seq == last.seq + 1  # the bus goes on after a timed-out batch


async def test_publish_batch_refuses_a_malformed_message_before_sending_any(bus):
    await bus.ensure_streams()
    body = events_pb2.ToolExecutionRequested(call_id="m1").SerializeToString()
    kind = "p2engine.tools.v1.ToolExecutionRequested"
    before = await bus.publish_bytes(tool_exec_subject("get_weather"), body, kind, "malformed-0")
    good = (tool_exec_subject("get_weather"), body, kind, "malformed-1")
    with pytest.raises(ValueError, match="whitespace"):
        await bus.publish_batch([good, (tool_exec_subject("x"), body, kind, "two\r\nwords")])
    with pytest.raises(ValueError, match="whitespace"):
        await bus.publish_batch([good, ("p2e.tools.exec.a b", body, kind, "malformed-2")])
    too_big = b"x" * (bus.nc.max_payload + 1)
    with pytest.raises(ValueError, match="exceeds max_payload"):
        await bus.publish_batch([good, (tool_exec_subject("x"), too_big, kind, "malformed-3")])
    after = await bus.publish_bytes(*good)
    assert after.seq == before.seq + 1  # none of the refused batches' messages went out


async def test_publish_batch_reports_a_stream_refusal_as_that_messages_error(bus):
    from nats.js.api import StreamConfig
    from nats.js.errors import APIError

    await bus.js.add_stream(StreamConfig(name="SMALL", subjects=["small.>"], max_msg_size=256))
    kind = "p2engine.tools.v1.ToolExecutionRequested"
    ok, refused = await bus.publish_batch(
        [("small.a", b"tiny", kind, "small-1"), ("small.b", b"y" * 512, kind, "small-2")]
    )
    assert not isinstance(ok, BaseException) and ok.stream == "SMALL"
    assert isinstance(refused, APIError) and "size" in str(refused.description)


def test_ack_reader_reads_every_pub_ack_form():
    from nats.js.api import PubAck
    from nats.js.errors import APIError, NoStreamResponseError

    from p2e_kit.bus import _ack_reader

    read = _ack_reader()

    def reply(data: bytes, headers: dict[str, str] | None = None) -> object:
        return read(data, headers)

    assert reply(b'{"stream":"S","seq":7}') == PubAck(stream="S", seq=7)
    assert reply(b'{"stream":"S","seq":7,"duplicate": true}') == PubAck(
        stream="S", seq=7, duplicate=True
    )
    assert reply(b'{"stream":"S","domain":"hub","seq":9}') == PubAck(
        stream="S", seq=9, domain="hub"
    )
    # Fields the plain form does not know go through the JSON decoder.
    assert reply(b'{"stream":"S","seq":3,"batch":"b1","count":2}') == PubAck(stream="S", seq=3)
    assert reply(b'{"stream":"S","seq":4, "duplicate":true}') == PubAck(
        stream="S", seq=4, duplicate=True
    )
    error = reply(b'{"error":{"code":400,"err_code":10054,"description":"too big"},"seq":0}')
    assert isinstance(error, APIError) and error.err_code == 10054
    assert isinstance(reply(b"", {"Status": "503"}), NoStreamResponseError)
    assert isinstance(reply(b"not json"), ValueError)
