"""Canton adapter pieces without HTTP: tokens, command ids, Daml values, error classification."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from p2e_kit.errors import FailedPrecondition, InvalidArgument
from p2e_ledger_gateway.canton import contracts as c
from p2e_ledger_gateway.canton.auth import TokenProvider, b64url, decode_jwt
from p2e_ledger_gateway.canton.config import CantonSettings
from p2e_ledger_gateway.canton.errors import CantonError, refusal
from p2e_ledger_gateway.canton.testing import fake_settings

# --- tokens ---------------------------------------------------------------------------------


def test_minted_token_is_audience_based_hs256() -> None:
    settings = fake_settings(
        audience="https://daml.com/jwt/aud/participant/p1", user_id="p2e-user", hmac_secret="s3"
    )
    token = TokenProvider(settings, clock=lambda: 1_000.0).token()
    header, claims = decode_jwt(token, b"s3")
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims == {
        "aud": "https://daml.com/jwt/aud/participant/p1",
        "sub": "p2e-user",
        "iat": 1000,
        "exp": 1300,
    }
    with pytest.raises(ValueError, match="signature"):
        decode_jwt(token, b"another secret")


def test_hs256_signature_is_standard() -> None:
    # Independent check of the signature: HMAC-SHA256 over "<header>.<claims>".
    token = TokenProvider(fake_settings(hmac_secret="k"), clock=lambda: 0.0).token()
    head, body, signature = token.split(".")
    expected = hmac.new(b"k", f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert signature == b64url(expected)


def test_without_secret_the_token_is_unsigned_and_carries_issuer() -> None:
    token = TokenProvider(fake_settings(issuer="p2engine-dev"), clock=lambda: 0.0).token()
    header, claims = decode_jwt(token)
    assert header["alg"] == "none"
    assert token.endswith(".")
    assert claims["iss"] == "p2engine-dev"
    assert claims["aud"] == "https://daml.com/jwt/aud/participant/sandbox"
    assert claims["sub"] == "p2engine"


def test_token_is_cached_then_refreshed_before_expiry() -> None:
    now = [0.0]
    provider = TokenProvider(fake_settings(token_ttl_seconds=100), clock=lambda: now[0])
    first = provider.token()
    now[0] = 60.0
    assert provider.token() == first
    now[0] = 75.0  # within the 30 s refresh margin
    assert provider.token() != first
    assert decode_jwt(provider.token())[1]["exp"] == 175


def test_static_token_from_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2E_CANTON_TOKEN", "eyJ.static.token")
    provider = TokenProvider(CantonSettings())
    assert provider.authorization() == "Bearer eyJ.static.token"


# --- command ids and values -----------------------------------------------------------------


def test_transfer_command_id_is_derived_from_payer_and_request_id() -> None:
    expected = "p2e-" + hashlib.sha256(b"alice|req-1").hexdigest()[:32]
    assert c.transfer_command_id("alice", "req-1") == expected
    assert c.transfer_command_id("alice", "req-1") == expected
    assert c.transfer_command_id("bob", "req-1") != expected
    assert c.transfer_command_id("alice", "req-2") != expected
    assert c.command_id("init", "issuer", "alice").startswith("p2e-init-")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("12.50"), "12.50"),
        (Decimal("0.0000000001"), "0.0000000001"),
        (Decimal("1E+2"), "100"),
        (Decimal("7"), "7"),
    ],
)
def test_amounts_become_daml_numeric_strings(value: Decimal, text: str) -> None:
    assert c.daml_decimal(value, field="amount") == text


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0"),
        Decimal("-1"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("0.00000000001"),
        Decimal("1E18"),
        12.5,
    ],
)
def test_amounts_daml_would_refuse_or_round_are_invalid(value: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        c.daml_decimal(value, field="amount")  # type: ignore[arg-type]
    assert caught.value.violations[0].field == "amount"


def test_zero_is_allowed_for_an_initial_balance() -> None:
    assert c.daml_decimal(Decimal("0"), field="initial_balance", allow_zero=True) == "0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01T00:00:04Z", datetime(2025, 1, 1, 0, 0, 4, tzinfo=UTC)),
        ("2025-01-01T00:00:04.123456789Z", datetime(2025, 1, 1, 0, 0, 4, 123456, tzinfo=UTC)),
        ("2025-01-01T01:00:04.5+01:00", datetime(2025, 1, 1, 0, 0, 4, 500000, tzinfo=UTC)),
    ],
)
def test_ledger_times_parse_with_any_fraction(text: str, expected: datetime) -> None:
    assert c.parse_time(text) == expected


def test_wallet_contract_decodes_the_json_encoding() -> None:
    event = {
        "contractId": "00ab",
        "offset": 7,
        "createdAt": "2025-01-01T00:00:07Z",
        "createArgument": {
            "issuer": "bank::1220",
            "owner": "p2e-agent-a::1220",
            "agentId": "a",
            "balance": "99.9900000000",
            "frozen": False,
            "sentCount": "3",
            "receivedCount": 2,
        },
    }
    wallet = c.WalletContract.from_event(event)
    assert wallet.balance == Decimal("99.99")
    assert (wallet.sent_count, wallet.received_count, wallet.offset) == (3, 2, 7)


def test_templates_match_package_id_references_by_name() -> None:
    templates = c.Templates("p2engine-wallet")
    assert templates.wallet == "#p2engine-wallet:Wallet:Wallet"
    event = {"templateId": "deadbeef:Wallet:Wallet", "packageName": "p2engine-wallet"}
    assert templates.is_(event, c.WALLET)
    assert not templates.is_(event, c.TRANSFER_RECORD)
    assert not templates.is_({**event, "packageName": "other"}, c.WALLET)


# --- errors ---------------------------------------------------------------------------------


def _error(status: int, **fields: object) -> CantonError:
    body = {"code": "X", "cause": "c", "context": {}, "errorCategory": 9} | fields
    return CantonError.from_body(status, json.dumps(body).encode())


def test_error_classification() -> None:
    assert _error(409, code="DUPLICATE_COMMAND", errorCategory=10).is_duplicate
    locked = _error(409, code="LOCAL_VERDICT_LOCKED_CONTRACTS", errorCategory=2)
    assert locked.is_contention and not locked.is_transient
    assert _error(404, code="CONTRACT_NOT_FOUND", errorCategory=11).is_contention
    assert _error(409, code="SOMETHING_NEW", errorCategory=2).is_contention
    assert _error(503, code="SERVICE_NOT_RUNNING", errorCategory=1).is_transient
    assert _error(500, code="LEDGER_API_INTERNAL_ERROR", errorCategory=4).is_transient
    failure = _error(400, code="DAML_FAILURE")
    assert failure.is_interpretation and not failure.is_transient


def test_text_plain_decoding_failures_parse() -> None:
    err = CantonError.from_body(400, b"Invalid value for: body")
    assert (err.code, err.cause, err.is_transient) == ("HTTP_400", "Invalid value for: body", False)


@pytest.mark.parametrize(
    "fields",
    [
        {"context": {"reason": "INSUFFICIENT_FUNDS"}},
        {"context": {"error_id": "p2engine.dev/INSUFFICIENT_FUNDS"}},
        {"code": "UNHANDLED_EXCEPTION", "cause": "AssertionFailed: INSUFFICIENT_FUNDS: 5 < 9"},
    ],
)
def test_daml_refusal_reason_from_meta_error_id_or_text(fields: dict[str, object]) -> None:
    err = _error(400, **({"code": "DAML_FAILURE"} | fields))
    mapped = refusal(err, subject="wallet:alice")
    assert isinstance(mapped, FailedPrecondition)
    assert mapped.reason == "INSUFFICIENT_FUNDS"
    assert mapped.violations[0].subject == "wallet:alice"


def test_invalid_independent_of_state_refusal_is_invalid_argument() -> None:
    err = _error(400, code="DAML_FAILURE", errorCategory=8, context={"reason": "INVALID_AMOUNT"})
    mapped = refusal(err, subject="wallet:alice")
    assert isinstance(mapped, InvalidArgument)
    assert (mapped.reason, mapped.violations[0].field) == ("INVALID_AMOUNT", "amount")
