"""Client channels: deadlines, a retry policy for UNAVAILABLE, and the caller identity.

The caller identity travels in the `p2e-caller` metadata as "agent:<id>",
"operator:<name>" or "service:<name>". Services trust it from the network they run in
(loopback, or a cluster network with mTLS in production).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from p2e_kit.errors import InvalidArgument

CALLER_KEY = "p2e-caller"
# The conversation a call is made for (provenance of ledger events and artifacts).
CONVERSATION_KEY = "p2e-conversation"
DEFAULT_DEADLINE_SECONDS = 10.0

_RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True)
class Caller:
    kind: str  # "agent" | "operator" | "service" | "anonymous"
    id: str

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


ANONYMOUS = Caller("anonymous", "")


def caller_metadata(kind: str, ident: str) -> tuple[tuple[str, str], ...]:
    """Metadata to send with a call made as `kind:ident`."""
    return ((CALLER_KEY, f"{kind}:{ident}"),)


def parse_caller(metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
    """The caller named by invocation metadata; ANONYMOUS when absent."""
    for key, value in metadata or ():
        if key == CALLER_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            kind, _, ident = text.partition(":")
            if kind not in ("agent", "operator", "service") or not ident:
                raise InvalidArgument(
                    f"bad {CALLER_KEY} metadata {text!r}: want agent:<id>, operator:<name> or service:<name>",
                    field=CALLER_KEY,
                )
            return Caller(kind, ident)
    return ANONYMOUS


class _DefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    """Gives every unary call without a timeout the channel's default deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        if client_call_details.timeout is None:
            d = client_call_details
            client_call_details = grpc.aio.ClientCallDetails(
                d.method, self.seconds, d.metadata, d.credentials, d.wait_for_ready
            )
        return await continuation(client_call_details, request)


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str:
    """The text value of one invocation-metadata key ("" when absent)."""
    for name, value in metadata or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return ""


def open_channel(
    address: str,
    *,
    max_message_bytes: int = 16 * 1024 * 1024,
    default_deadline: float = DEFAULT_DEADLINE_SECONDS,
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel with retries on UNAVAILABLE and a default deadline for
    unary calls (streams set their own)."""
    return grpc.aio.insecure_channel(
        address,
        interceptors=[_DefaultDeadline(default_deadline)],
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_SERVICE_CONFIG),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
