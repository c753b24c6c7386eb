"""Unit tests: input checks, addresses from the environment, one-line error formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import typer

from p2e_cli import endpoints, inputs, render, render_chat, rpc
from p2e_kit import settings
from p2engine.common.v1 import common_pb2
from p2engine.orchestrator.v1 import orchestrator_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


LEDGER = endpoints.BY_KEY["ledger"]


def describe(code: grpc.StatusCode, details: str) -> str:
    return rpc.describe(rpc.CallFailed(LEDGER, "127.0.0.1:50063", FakeRpcError(code, details)))


def test_default_ports_mirror_the_kit() -> None:
    assert endpoints.DEFAULT_PORTS == settings.DEFAULT_PORTS
    assert endpoints.DEFAULT_NATS_URL == settings.DEFAULT_NATS_URL
    fields = settings.Endpoints.model_fields
    for service in endpoints.SERVICES:
        assert f"{service.key}_addr" in fields
        assert service.addr_env == f"P2E_{service.key.upper()}_ADDR"


@pytest.mark.parametrize("text", ["25", "25.0", "25.50", "0.01", "100.0", ".5"])
def test_amount_is_kept_as_typed(text: str) -> None:
    assert inputs.amount(text) == text


@pytest.mark.parametrize("text", ["abc", "-5", "1e3", "NaN", "inf", "25,5", "", "0", "0.0"])
def test_bad_amount_exits_2(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exc:
        inputs.amount(text)
    assert exc.value.exit_code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_zero_balance_is_allowed_for_init() -> None:
    assert inputs.amount("0", "balance", allow_zero=True) == "0"


def test_since_accepts_ages_and_iso_times() -> None:
    now = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)
    assert inputs.since("30m", now) == now - timedelta(minutes=30)
    assert inputs.since("2h", now) == now - timedelta(hours=2)
    assert inputs.since("7d", now) == now - timedelta(days=7)
    assert inputs.since("2025-01-01T10:00:00+00:00") == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert inputs.since("2025-01-01").tzinfo is not None


def test_csv_list() -> None:
    assert inputs.csv_list("get_weather, delegate,,get_weather") == ["get_weather", "delegate"]
    assert inputs.csv_list("") == []


def test_addresses_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in endpoints.SERVICES:
        monkeypatch.delenv(service.addr_env, raising=False)
        monkeypatch.delenv(service.port_env, raising=False)
    assert endpoints.client_address(LEDGER) == "127.0.0.1:50063"
    monkeypatch.setenv("P2E_LEDGER_PORT", "6000")
    assert endpoints.client_address(LEDGER) == "127.0.0.1:6000"
    assert endpoints.listen_port(LEDGER) == 6000
    monkeypatch.setenv("P2E_LEDGER_ADDR", "ledger.internal:7000")
    assert endpoints.client_address(LEDGER) == "ledger.internal:7000"
    monkeypatch.delenv("P2E_LEDGER_PORT")
    assert endpoints.listen_port(LEDGER) == 50063  # a remote address says nothing about us
    monkeypatch.setenv("P2E_LEDGER_ADDR", "127.0.0.1:7001")
    assert endpoints.listen_port(LEDGER) == 7001


def test_bad_address_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2E_LEDGER_ADDR", "127.0.0.1:xx")
    with pytest.raises(ValueError, match="P2E_LEDGER_ADDR"):
        endpoints.client_address(LEDGER)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4225", ("127.0.0.1", 4225)),
        ("nats://user:pw@localhost:5000", ("localhost", 5000)),
        ("nats://a:1,nats://b:2", ("a", 1)),
        ("nats://example.org", ("example.org", 4222)),
    ],
)
def test_nats_url(url: str, expected: tuple[str, int]) -> None:
    assert endpoints.nats_host_port(url) == expected


def test_lookup_aliases() -> None:
    for name in ("ledger", "ledger-gateway", "LEDGER_GATEWAY"):
        assert endpoints.lookup(name) is LEDGER
    assert endpoints.lookup("artifact-store") is endpoints.BY_KEY["artifacts"]
    assert endpoints.lookup("tool-runner") is endpoints.BY_KEY["tool_runner"]
    assert endpoints.lookup("bogus") is None


def test_describe_formats() -> None:
    assert describe(grpc.StatusCode.NOT_FOUND, "wallet 'nobody' does not exist") == (
        "not found: wallet 'nobody' does not exist"
    )
    assert describe(grpc.StatusCode.FAILED_PRECONDITION, "insufficient\nfunds") == (
        "failed precondition: insufficient funds"
    )
    assert describe(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses") == (
        "cannot reach the ledger-gateway at 127.0.0.1:50063: is the stack running? (`p2engine up`)"
    )
    assert describe(grpc.StatusCode.UNIMPLEMENTED, "Method not found!") == (
        "unimplemented: the ledger-gateway does not implement this call yet"
    )
    assert describe(grpc.StatusCode.UNIMPLEMENTED, "audit arrives with v2") == (
        "unimplemented: audit arrives with v2"
    )
    assert "did not answer in time" in describe(grpc.StatusCode.DEADLINE_EXCEEDED, "")


def test_operator_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "alice")
    assert rpc.operator_id() == "alice"
    assert rpc.Session().metadata == (("p2e-caller", "operator:alice"),)


def test_request_ids_are_unique() -> None:
    assert rpc.new_request_id() != rpc.new_request_id()


def test_money_is_the_server_string() -> None:
    assert render.money(common_pb2.Money(amount="0.10", asset="P2E")) == "0.10 P2E"
    assert render.money(common_pb2.Money()) == ""


def _state(kind: int, **fields: Any) -> orchestrator_pb2.InteractionState:
    return orchestrator_pb2.InteractionState(agent_id="agent_alpha", kind=kind, **fields)  # type: ignore[arg-type]


def test_state_lines_are_compact_and_escaped() -> None:
    call = _state(
        orchestrator_pb2.STATE_KIND_TOOL_CALL,
        target="transfer_funds",
        data_json='{"to_agent": "agent_beta", "amount": 25}',
    )
    assert render_chat.state_line(call) == (
        "[dim]  → transfer_funds(to_agent=agent_beta, amount=25)[/dim]"
    )
    failed = _state(
        orchestrator_pb2.STATE_KIND_TOOL_RESULT, target="x", data_json='{"e": 1}', is_error=True
    )
    assert "failed" in (render_chat.state_line(failed) or "")
    said = _state(orchestrator_pb2.STATE_KIND_ASSISTANT_MESSAGE, text="[bold]hi")
    assert render_chat.state_line(said) == "[bold green]agent_alpha>[/bold green] \\[bold]hi"
    user = _state(orchestrator_pb2.STATE_KIND_USER_MESSAGE, text="hi")
    assert render_chat.state_line(user, echo_user=False) is None
    assert render_chat.state_line(_state(orchestrator_pb2.STATE_KIND_FINISHED)) is None


def test_tool_call_names() -> None:
    data = '{"tool_calls": [{"function": {"name": "get_weather"}}, {"name": "check_balance"}]}'
    assert render_chat.tool_call_names(data) == ["get_weather", "check_balance"]
    assert render_chat.tool_call_names("not json") == []
