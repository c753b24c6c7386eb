"""Calling the services: channels, stubs, caller identity, and every failure as one line.

A command builds an `async def body(session)` that takes stubs from the session and calls
them; `run(body)` runs it and turns whatever goes wrong into one line on stderr and an
exit code (1 for a failed call or an unreachable service, 130 for Ctrl-C). Never a traceback.

    async def body(s: Session) -> Wallet:
        ledger = s.stub("ledger", LedgerServiceStub)
        return await ledger.GetBalance(GetBalanceRequest(agent_id="agent_alpha"))

    wallet = run(body)
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
import typer

from p2e_cli import endpoints
from p2e_kit.channels import CALLER_KEY, DEFAULT_DEADLINE_SECONDS, open_channel
from p2e_kit.natsd import port_open

T = TypeVar("T")


class CallFailed(Exception):
    """A call to `service` failed with `error` (a grpc.RpcError)."""

    def __init__(self, service: endpoints.ServiceInfo, address: str, error: grpc.RpcError) -> None:
        super().__init__(str(error))
        self.service = service
        self.address = address
        self.error = error

    @property
    def code(self) -> str:
        """The status code's name, e.g. "ALREADY_EXISTS"."""
        code = self.error.code() if hasattr(self.error, "code") else None  # type: ignore[attr-defined]
        return code.name if code is not None else "UNKNOWN"


class Unreachable(Exception):
    def __init__(self, service: endpoints.ServiceInfo, address: str) -> None:
        super().__init__(f"{service.name} at {address}")
        self.service = service
        self.address = address


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and leave with `code`."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def operator_id() -> str:
    """The operator's name for the `p2e-caller` metadata: $USER, else the login name, else "cli"."""
    name = os.environ.get("USER", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = ""
    return name or "cli"


def unreachable_line(service: endpoints.ServiceInfo, address: str) -> str:
    return f"cannot reach the {service.name} at {address}: is the stack running? (`p2engine up`)"


def describe(failure: CallFailed) -> str:
    """One line for a failed call, e.g. "not found: wallet 'nobody' does not exist"."""
    from p2e_kit.status import decode, one_line

    details = decode(failure.error)
    if details.code == "UNAVAILABLE" and not details.reason:
        return unreachable_line(failure.service, failure.address)
    if details.code == "UNIMPLEMENTED" and details.message in ("", "Method not found!"):
        return f"unimplemented: the {failure.service.name} does not implement this call yet"
    if details.code == "DEADLINE_EXCEEDED" and not details.reason:
        return f"the {failure.service.name} at {failure.address} did not answer in time"
    line = one_line(failure.error, target=failure.address)
    return " ".join(line.split())  # a server message with newlines still prints as one line


class Stub:
    """A generated stub whose calls carry the operator identity and a deadline in seconds
    (`deadline=`: 10 s for unary calls, none for streams), and whose failures name the
    service they came from (`CallFailed`)."""

    def __init__(
        self,
        service: endpoints.ServiceInfo,
        address: str,
        stub: Any,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._service = service
        self._address = address
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if isinstance(method, grpc.aio.UnaryStreamMultiCallable):
            return self._streaming(method)
        return self._unary(method)

    def _unary(self, method: Any) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, deadline: float | None = DEFAULT_DEADLINE_SECONDS) -> Any:
            try:
                return await method(request, metadata=self._metadata, timeout=deadline)
            except grpc.RpcError as exc:
                raise CallFailed(self._service, self._address, exc) from None

        return call

    def _streaming(self, method: Any) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, deadline: float | None = None) -> AsyncIterator[Any]:
            try:
                async for item in method(request, metadata=self._metadata, timeout=deadline):
                    yield item
            except grpc.RpcError as exc:
                raise CallFailed(self._service, self._address, exc) from None

        return call


class Session:
    """The channels one command uses, opened on first use and closed by `run`."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        self.metadata = metadata or ((CALLER_KEY, f"operator:{operator_id()}"),)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def address(self, key: str) -> str:
        return endpoints.client_address(endpoints.BY_KEY[key])

    def stub(self, key: str, stub_class: Callable[[grpc.aio.Channel], Any]) -> Any:
        """A `Stub` around `stub_class` on the channel to service `key` ("ledger", ...)."""
        service = endpoints.BY_KEY[key]
        address = self.address(key)
        if key not in self._channels:
            host, port = endpoints.split_address(address)
            if endpoints.is_loopback(host) and not port_open(host, port):
                raise Unreachable(service, address)  # fail now, not after the retry policy
            self._channels[key] = open_channel(address)
        return Stub(service, address, stub_class(self._channels[key]), self.metadata)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def run(body: Callable[[Session], Awaitable[T]], session: Session | None = None) -> T:
    """Run `body` with a fresh session; any failure becomes one line on stderr and an exit
    (Ctrl-C: 130)."""
    return cast(T, _run(body, session or Session(), interrupt_ok=False))


def watch(body: Callable[[Session], Awaitable[None]]) -> None:
    """Like `run` for commands that stream until Ctrl-C, which ends them quietly (exit 0)."""
    _run(body, Session(), interrupt_ok=True)


def _run(
    body: Callable[[Session], Awaitable[T]], session: Session, *, interrupt_ok: bool
) -> T | None:

    async def main() -> T:
        try:
            return await body(session)
        finally:
            await session.close()

    try:
        return asyncio.run(main())
    except CallFailed as exc:
        fail(describe(exc))
    except Unreachable as exc:
        fail(unreachable_line(exc.service, exc.address))
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        if interrupt_ok:
            return None
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except ValueError as exc:  # e.g. a malformed P2E_*_ADDR / P2E_*_PORT
        fail(str(exc))
    except Exception as exc:
        if os.environ.get("P2E_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set P2E_DEBUG=1 for the traceback)")


def new_request_id() -> str:
    from p2e_kit.ids import new_id

    return new_id("cli")
