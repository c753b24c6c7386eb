"""Running a service: serve registrations until SIGTERM, and a `main()` helper for `__main__`."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from p2e_kit.errors import P2EError
from p2e_kit.grpc_server import Registration, create_server, mark_serving, run_until_signalled
from p2e_kit.logs import configure_logging
from p2e_kit.settings import ServiceSettings

log = logging.getLogger(__name__)


@asynccontextmanager
async def grpc_serving(
    registrations: Sequence[Registration], *, address: str, max_message_bytes: int = 16 << 20
) -> AsyncIterator[tuple[int, object, object]]:
    """Start a server, mark it SERVING, yield (port, server, health); stop it on exit.

    Tests use this with address "127.0.0.1:0".
    """
    server, port, health = create_server(
        registrations, address=address, max_message_bytes=max_message_bytes
    )
    await server.start()
    await mark_serving(health, [r.service_name for r in registrations])
    try:
        yield port, server, health
    finally:
        await server.stop(0.5)


async def serve(
    settings: ServiceSettings,
    registrations: Sequence[Registration],
    *,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain and run `on_stop`."""
    server, port, health = create_server(
        registrations,
        address=settings.listen_address,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    await server.start()
    # What start-up built (modules, the app) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it in the middle of a request.
    gc.freeze()
    await mark_serving(health, [r.service_name for r in registrations])
    log.info("%s serving on %s:%d", settings.service_name, settings.host, port)
    await run_until_signalled(
        server, health, grace_seconds=settings.shutdown_grace_seconds, on_stop=on_stop
    )


def run_main(settings: ServiceSettings, start: Callable[[Any], Coroutine[Any, Any, None]]) -> int:
    """Configure logging and run `start(settings)`; a start-up failure is one log line, exit 2."""
    configure_logging(settings.log_level, settings.service_name)
    try:
        asyncio.run(start(settings))
    except P2EError as exc:
        log.error("cannot start %s: %s", settings.service_name, exc)
        return 2
    except OSError as exc:
        log.error("cannot start %s: %s", settings.service_name, exc)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
