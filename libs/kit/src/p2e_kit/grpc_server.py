"""gRPC server bootstrap: error mapping, health, reflection, limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from p2e_kit.errors import ERROR_DOMAIN, FailedPrecondition, InvalidArgument, P2EError

log = logging.getLogger(__name__)

# The asyncio health servicer (the type stubs lack the `aio` re-export).
health_aio = health.aio  # pyright: ignore[reportAttributeAccessIssue]


@dataclass(frozen=True)
class Registration:
    """One servicer: its `add_XServicer_to_server` function and full service name."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    service_name: str


def to_status(error: P2EError) -> status_pb2.Status:
    """The google.rpc.Status (with ErrorInfo and field/precondition details) of a domain error."""
    code = getattr(code_pb2, error.code)
    details: list[Any] = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, FailedPrecondition) and error.violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code, message=error.message, details=packed)


async def _abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, P2EError):
        status = rpc_status.to_status(to_status(exc))
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(exc, NotImplementedError):  # a generated servicer's unwritten method
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except (P2EError, Exception) as exc:
            if isinstance(exc, asyncio.CancelledError) or _is_abort(exc):
                raise
            await _abort_with(context, exc)

    return wrapper


def _wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in behavior(request, context):
                yield item
        except (P2EError, Exception) as exc:
            if isinstance(exc, asyncio.CancelledError) or _is_abort(exc):
                raise
            await _abort_with(context, exc)

    return wrapper


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises this internal exception to unwind the handler; let it pass.
    return type(exc).__name__ == "AbortError"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns P2EError into a rich status; anything else into INTERNAL with the traceback logged.

    A method's wrapped handler is built once, at its first call, and reused while the server
    hands out the same handler for it (every call builds none)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (handler, wrapped)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrapped(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrapped(handler: Any) -> Any:
    """`handler` with its behavior's errors mapped to statuses (`_abort_with`)."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def create_server(
    registrations: Iterable[Registration],
    *,
    address: str,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> tuple[grpc.aio.Server, int, Any]:
    """A grpc.aio server bound to `address` ("127.0.0.1:0" picks a free port).

    Returns (server, bound port, health servicer); every service starts as SERVING once
    `server.start()` is awaited.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=options)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
    for reg in registrations:
        reg.add_to_server(reg.servicer, server)
        names.append(reg.service_name)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}: the port is busy or the address is wrong")
    return server, port, health_servicer


async def mark_serving(health_servicer: Any, names: Iterable[str]) -> None:
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def run_until_signalled(
    server: grpc.aio.Server,
    health_servicer: Any,
    *,
    grace_seconds: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: report NOT_SERVING, drain calls for `grace_seconds`, clean up."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining calls for up to %.1fs", grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")
