"""The standard gRPC health check (grpc.health.v1, service "") as one word."""

from __future__ import annotations

from typing import Any

from p2e_cli import endpoints
from p2e_kit.natsd import port_open

# Short reconnect backoff: a fresh channel per check must not wait out grpc's default 1 s.
_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


def check_health(address: str, *, timeout: float = 1.0) -> str:
    """SERVING | NOT_SERVING | SERVICE_UNKNOWN | UNKNOWN | down (nothing answers)."""
    host, port = endpoints.split_address(address)
    if not port_open(host, port, timeout=min(timeout, 0.5)):
        return "down"
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
            if code == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return "NO_HEALTH_SERVICE"
            return "down"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
