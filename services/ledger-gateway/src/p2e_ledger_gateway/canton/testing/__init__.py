"""Test doubles of the Canton backend: a spec-validating fake JSON Ledger API.

Test-only (needs the dev dependency openapi-core); production code never imports this package.

    server = SpecServer()                      # FakeParticipant + OpenAPI validation + faults
    backend = make_backend(server)             # CantonLedgerBackend over server.transport()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from p2e_kit.appconfig import LedgerConfig
from p2e_ledger_gateway.canton.backend import CantonLedgerBackend
from p2e_ledger_gateway.canton.config import CantonSettings
from p2e_ledger_gateway.canton.testing.openapi import CantonSpec, SpecViolation, load_spec
from p2e_ledger_gateway.canton.testing.participant import Auth, FakeParticipant
from p2e_ledger_gateway.canton.testing.server import Faults, SpecServer

FAKE_URL = "http://canton.test:7575"

__all__ = [
    "FAKE_URL",
    "Auth",
    "CantonSpec",
    "FakeParticipant",
    "Faults",
    "SpecServer",
    "SpecViolation",
    "fake_settings",
    "load_spec",
    "make_backend",
]


def fake_settings(**overrides: object) -> CantonSettings:
    """Settings for tests: no environment token, no waiting between attempts, no
    background reconciliation (a test that wants it sets `reconcile_seconds`)."""
    values: dict[str, object] = {
        "token": None,
        "hmac_secret": None,
        "backoff_min_seconds": 0.0,
        "backoff_max_seconds": 0.0,
        "reconcile_seconds": 0.0,
    }
    values.update(overrides)
    return CantonSettings.model_validate(values)


def make_backend(
    server: SpecServer,
    *,
    settings: CantonSettings | None = None,
    party_id: str = "p2engine::default",
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> CantonLedgerBackend:
    """A CantonLedgerBackend whose HTTP calls all go to `server`."""
    ledger = LedgerConfig(backend="canton", json_api_url=FAKE_URL, party_id=party_id)
    if sleep is None:
        return CantonLedgerBackend.from_config(
            ledger, settings or fake_settings(), transport=server.transport()
        )
    return CantonLedgerBackend.from_config(
        ledger, settings or fake_settings(), transport=server.transport(), sleep=sleep
    )
