"""NATS JetStream: every stream, subject and durable consumer of P2Engine, declared here.

Subjects are `p2e.<domain>.<event>.<id>`. Messages are protobuf bytes with the headers
`Nats-Msg-Id` (deduplication inside the stream's window) and `P2E-Type` (the full proto
message name), so subscribers in any language can decode them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2e_kit.errors import DependencyUnavailable

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.api import ConsumerConfig, PubAck, StreamConfig
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

TYPE_HEADER = "P2E-Type"
MSG_ID_HEADER = "Nats-Msg-Id"
DUPLICATE_WINDOW_SECONDS = 120.0
DAY = 24 * 3600.0
PUBLISH_TIMEOUT = 2.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool = False
    max_age_seconds: float = 0.0  # 0: keep forever (within limits)

    def config(self) -> StreamConfig:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.WORK_QUEUE if self.work_queue else RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=self.max_age_seconds or None,
        )


ARTIFACTS = StreamSpec("P2E_ARTIFACTS", ("p2e.artifacts.>",), max_age_seconds=30 * DAY)
TOOLS = StreamSpec("P2E_TOOLS", ("p2e.tools.exec.>",), work_queue=True)
TOOL_RESULTS = StreamSpec("P2E_TOOL_RESULTS", ("p2e.tools.completed.>",), max_age_seconds=DAY)
LEDGER = StreamSpec("P2E_LEDGER", ("p2e.ledger.>",), max_age_seconds=30 * DAY)
ORCHESTRATOR = StreamSpec("P2E_ORCHESTRATOR", ("p2e.orchestrator.>",), max_age_seconds=7 * DAY)
EVALS = StreamSpec(
    "P2E_EVALS", ("p2e.evals.>", "p2e.rollouts.run_finished.>"), max_age_seconds=30 * DAY
)
ROLLOUTS = StreamSpec("P2E_ROLLOUTS", ("p2e.rollouts.run.>",), work_queue=True)

STREAMS: tuple[StreamSpec, ...] = (
    ARTIFACTS,
    TOOLS,
    TOOL_RESULTS,
    LEDGER,
    ORCHESTRATOR,
    EVALS,
    ROLLOUTS,
)


_UNSAFE_TOKEN_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@functools.lru_cache(maxsize=4096)
def _token(value: str) -> str:
    """A subject token: no dots, wildcards or spaces (remembered: the same wallets and
    conversations come back)."""
    return _UNSAFE_TOKEN_CHARS.sub("_", value) or "_"


def artifact_subject(conversation_id: str, kind: str) -> str:
    return f"p2e.artifacts.{_token(conversation_id)}.{_token(kind)}"


def tool_exec_subject(tool_name: str) -> str:
    return f"p2e.tools.exec.{_token(tool_name)}"


def tool_completed_subject(call_id: str) -> str:
    return f"p2e.tools.completed.{_token(call_id)}"


def ledger_subject(event: str, wallet: str) -> str:
    return f"p2e.ledger.{_token(event)}.{_token(wallet)}"


def turn_finished_subject(conversation_id: str) -> str:
    return f"p2e.orchestrator.turn_finished.{_token(conversation_id)}"


def evaluation_completed_subject(conversation_id: str) -> str:
    return f"p2e.evals.evaluation_completed.{_token(conversation_id)}"


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer `<service>_<purpose>`."""

    durable: str
    stream: StreamSpec
    filter_subject: str
    ack_wait_seconds: float = 30.0
    max_deliver: int = 5

    def config(self) -> ConsumerConfig:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_seconds,
            max_deliver=self.max_deliver,
            filter_subject=self.filter_subject,
        )


TOOL_RUNNER_EXEC = ConsumerSpec(
    "tool_runner_exec", TOOLS, "p2e.tools.exec.>", ack_wait_seconds=60.0
)
ARTIFACT_STORE_INDEX = ConsumerSpec(
    "artifact_store_index", ARTIFACTS, "p2e.artifacts.>", max_deliver=10
)
ROLLOUT_WORKER = ConsumerSpec("evaluator_rollout_runs", ROLLOUTS, "p2e.rollouts.run.>", 300.0, 3)


class _AckBatch:
    """The PubAcks (or errors) of one `publish_batch`, and a future done when all are in."""

    __slots__ = ("done", "outcomes", "waiting")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.outcomes: list[PubAck | BaseException | None] = [None] * size
        self.waiting = size
        self.done = done

    def settle(self, index: int, outcome: PubAck | BaseException) -> None:
        if self.outcomes[index] is None:
            self.outcomes[index] = outcome
            self.waiting -= 1
            if self.waiting == 0 and not self.done.done():
                self.done.set_result(None)


# A PubAck as nats-server writes it: {"stream":"S","seq":7}, with "domain" before "seq" and
# `,"duplicate": true` after it when present. Anything else goes through the JSON decoder.
_PLAIN_ACK = re.compile(
    rb'\{"stream":"([^"\\]+)",(?:"domain":"([^"\\]*)",)?"seq":(\d+)(,"duplicate": ?true)?\}'
)


def _ack_reader() -> Callable[[bytes, dict[str, str] | None], PubAck | BaseException]:
    """What reads a JetStream publish's reply (its body and nats-py's parsed headers): its
    PubAck, or the error it reports (nats-py's names bound once, not looked up per ack)."""
    from nats.js.api import PubAck
    from nats.js.errors import APIError, NoStreamResponseError

    def read(data: bytes, headers: dict[str, str] | None) -> PubAck | BaseException:
        if headers and headers.get("Status") == "503":  # no stream has the subject
            return NoStreamResponseError()
        plain = _PLAIN_ACK.fullmatch(data)
        if plain is not None:  # the usual reply, read without a JSON decoder
            stream, domain, seq, duplicate = plain.groups()
            return PubAck(
                stream=stream.decode(),
                seq=int(seq),
                domain=domain.decode() if domain is not None else None,
                duplicate=True if duplicate else None,
            )
        try:
            reply = json.loads(data)
            if "error" in reply:
                APIError.from_error(reply["error"])  # raises the matching error
            # The fields a PubAck has (PubAck.from_response looks each one up per message).
            return PubAck(
                stream=reply["stream"],
                seq=reply["seq"],
                domain=reply.get("domain"),
                duplicate=reply.get("duplicate"),
            )
        except Exception as exc:
            return exc

    return read


class Bus:
    """A connected NATS client with its JetStream context."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self._ack_prefix: str | None = None
        self._ack_tokens = itertools.count(1)
        self._acks: dict[bytes, tuple[_AckBatch, int]] = {}
        self._read_ack = _ack_reader()

    async def ensure_streams(self, streams: tuple[StreamSpec, ...] = STREAMS) -> None:
        """Create or update every stream; safe to run at every start-up, by every service."""
        from nats.js.errors import NotFoundError

        for spec in streams:
            config = spec.config()
            try:
                await self.js.stream_info(spec.name)
                await self.js.update_stream(config)
            except NotFoundError:
                await self.js.add_stream(config)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        await self.js.add_consumer(spec.stream.name, spec.config())

    async def publish(
        self, subject: str, message: Message, msg_id: str, *, ack_timeout: float = PUBLISH_TIMEOUT
    ) -> PubAck:
        """Publish a proto message with `Nats-Msg-Id`; a repeat within the window is dropped.

        Fails at once (nats.errors.ConnectionReconnectingError) while the connection is down,
        instead of waiting for an ack that cannot come: callers keep what they publish in an
        outbox or report the dependency as unavailable.
        """
        return await self.publish_bytes(
            subject,
            message.SerializeToString(),
            message.DESCRIPTOR.full_name,
            msg_id,
            ack_timeout=ack_timeout,
        )

    async def publish_bytes(
        self,
        subject: str,
        body: bytes,
        message_type: str,
        msg_id: str,
        *,
        ack_timeout: float = PUBLISH_TIMEOUT,
    ) -> PubAck:
        """`publish` of an already serialized message of type `message_type` (full name)."""
        outcome = (
            await self.publish_batch(
                [(subject, body, message_type, msg_id)], ack_timeout=ack_timeout
            )
        )[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def publish_batch(
        self,
        messages: Sequence[tuple[str, bytes, str, str]],
        *,
        ack_timeout: float = PUBLISH_TIMEOUT,
    ) -> list[PubAck | BaseException]:
        """Publish (subject, body, message_type, msg_id) messages in order on the one
        connection, then wait for their PubAcks together: each outcome, in order, is the
        PubAck or the error (no stream, a JetStream error, a timeout).

        Each message carries a reply subject of this Bus's own ack inbox (one subscription,
        made at the first publish), so a publish costs one write and one reply, without a
        request's per-message inbox, timer and task (nats-py's `js.publish`); the batch
        is written as one buffer of HPUB frames (`_hpub`) and waits on one future, settled
        by the last of its acks.
        A subject, msg id or type with whitespace, or a body over the server's max_payload,
        raises ValueError before anything is sent.
        Fails at once (nats.errors.ConnectionReconnectingError) while the connection is down.
        """
        from nats.errors import ConnectionReconnectingError

        if not self.nc.is_connected:
            raise ConnectionReconnectingError()
        if not messages:
            return []
        prefix = await self._ack_inbox()
        limit = self.nc.max_payload
        batch = _AckBatch(len(messages), asyncio.get_running_loop().create_future())
        tokens: list[str] = []
        try:
            frames = bytearray()
            for index, (subject, body, message_type, msg_id) in enumerate(messages):
                token = str(next(self._ack_tokens))
                self._acks[token.encode()] = (batch, index)
                tokens.append(token)
                frames += _hpub(subject, f"{prefix}.{token}", msg_id, message_type, body, limit)
            await _write(self.nc, bytes(frames), len(messages))
            await asyncio.wait([batch.done], timeout=ack_timeout)
        finally:
            for token in tokens:
                self._acks.pop(token.encode(), None)
        return [
            TimeoutError(f"nats: no PubAck within {ack_timeout:g}s") if outcome is None else outcome
            for outcome in batch.outcomes
        ]

    async def _ack_inbox(self) -> str:
        if self._ack_prefix is None:
            prefix = self.nc.new_inbox()
            subscription = await self.nc.subscribe(f"{prefix}.*", cb=self._on_ack)
            _take_acks_inline(self.nc, subscription._id, self._take_ack)
            self._ack_prefix = prefix
        return self._ack_prefix

    def _take_ack(self, subject: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        waiting = self._acks.pop(subject[subject.rfind(b".") + 1 :], None)
        if waiting is not None:
            batch, index = waiting
            batch.settle(index, self._read_ack(data, headers))

    async def _on_ack(self, msg: Msg) -> None:
        """An ack nats-py delivered itself (`_take_acks_inline` hands it those with headers)."""
        self._take_ack(msg.subject.encode(), msg.data, msg.headers)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


_WHITESPACE = re.compile(r"\s")


def _hpub(
    subject: str, reply: str, msg_id: str, message_type: str, body: bytes, limit: int
) -> bytes:
    """One message as the NATS protocol's HPUB frame, with the `Nats-Msg-Id` and `P2E-Type`
    headers (what nats-py's `publish` writes, built here for a whole batch at once)."""
    if (
        _WHITESPACE.search(subject)
        or _WHITESPACE.search(msg_id)
        or _WHITESPACE.search(message_type)
    ):
        raise ValueError(f"nats: whitespace in subject, msg id or type: {subject!r} {msg_id!r}")
    if len(body) > limit:
        raise ValueError(f"nats: a {len(body)}-byte message exceeds max_payload ({limit})")
    headers = f"NATS/1.0\r\n{MSG_ID_HEADER}: {msg_id}\r\n{TYPE_HEADER}: {message_type}\r\n\r\n"
    head = headers.encode()
    size = len(head)
    return b"".join(
        (f"HPUB {subject} {reply} {size} {size + len(body)}\r\n".encode(), head, body, b"\r\n")
    )


def _take_acks_inline(
    nc: Client, sid: int, take: Callable[[bytes, bytes, dict[str, str] | None], None]
) -> None:
    """Have nats-py's protocol parser hand the replies of subscription `sid` (the Bus's ack
    inbox) straight to `take`, instead of building a `Msg` for each and passing it through
    the subscription's queue and task (a quarter of what a publish cost this process).
    A reply with headers (a status: 503, no stream) still goes the usual way, to the
    subscription's callback. `take` runs inside nats-py's read loop: what it raises is
    logged, never let out there. (nats-py is pinned: `_process_msg` is its internal.)"""
    process_msg = nc._process_msg
    stats = nc.stats

    async def intercept(
        msg_sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if msg_sid != sid or headers:
            await process_msg(msg_sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            take(subject, data, None)
        except Exception:
            log.exception("nats: a PubAck could not be read: %r", data[:200])

    nc._process_msg = intercept  # type: ignore[method-assign]


async def _write(nc: Client, frames: bytes, count: int) -> None:
    """Hand ready protocol frames to nats-py's outgoing buffer and wake its flusher, as its
    `publish` does per message (nats-py is pinned: these are its internals)."""
    nc.stats["out_msgs"] += count
    nc.stats["out_bytes"] += len(frames)
    await nc._send_command(frames)
    await nc._flush_pending()


async def connect(url: str, name: str, *, connect_timeout: float = 2.0) -> Bus:
    """Connect to NATS, or raise DependencyUnavailable naming the URL.

    Once connected the client reconnects forever; the first connection must succeed
    within `connect_timeout` (nats-py would otherwise retry an absent server forever).
    """
    import nats

    async def _closed() -> None:
        log.info("nats connection closed")

    connected = False

    async def _error(exc: Exception) -> None:
        # Before the first connection the caller reports the failure once; after it, say why.
        if connected:
            log.warning("nats: %s", exc or type(exc).__name__)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                closed_cb=_closed,
                error_cb=_error,
            ),
            timeout=connect_timeout,
        )
    except (OSError, TimeoutError, Exception) as exc:
        raise DependencyUnavailable(
            f"cannot reach nats-server at {url}: is it running? ({type(exc).__name__})",
            reason="NATS_UNAVAILABLE",
        ) from exc
    connected = True
    return Bus(nc, nc.jetstream())
