"""Fixtures of the Canton adapter's tests: the OpenAPI spec, loaded once, and a fake participant
that fails the test if anything sent or answered broke the spec."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from p2e_ledger_gateway.canton.testing import CantonSpec, SpecServer, load_spec


@pytest.fixture(scope="session")
def spec() -> CantonSpec:
    return load_spec()


@pytest.fixture
def server(spec: CantonSpec) -> Iterator[SpecServer]:
    server = SpecServer(spec=spec)
    yield server
    assert server.violations == []
