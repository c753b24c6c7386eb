from __future__ import annotations

from decimal import Decimal

import pytest

from p2e_kit.errors import InvalidArgument
from p2e_ledger_gateway.money import Currency

P2E = Currency("P2E", 2)


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        ("1", 100),
        ("0.01", 1),
        ("125.5", 12550),
        ("125.50", 12550),
        ("125.500", 12550),  # trailing zeros: exact, nothing rounded
        ("007.10", 710),
        (".5", 50),
        ("5.", 500),
        ("1000000000000000", 10**17),  # the largest plausible amount: 10^15 units
    ],
)
def test_parse_exact_amounts(text: str, minor: int) -> None:
    assert P2E.parse(text) == minor


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0.00",
        "-1",
        "-0.01",
        "+1",
        "1.001",
        "0.001",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "abc",
        "1e3",
        "1,5",
        " 1",
        "1 ",
        ".",
        "1.2.3",
        "1000000000000000.01",
        "99999999999999999999999",
        "٣",  # a non-ASCII digit
    ],
)
def test_parse_refuses_bad_amounts(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        P2E.parse(text)
    assert [v.field for v in caught.value.violations] == ["amount"]


def test_zero_allowed_only_when_asked() -> None:
    assert P2E.parse("0", field="initial_balance", allow_zero=True) == 0
    with pytest.raises(InvalidArgument) as caught:
        P2E.parse("-1", field="initial_balance", allow_zero=True)
    assert caught.value.violations[0].field == "initial_balance"


def test_more_digits_than_scale_is_not_rounded() -> None:
    with pytest.raises(InvalidArgument, match="more than 2 fraction digits"):
        P2E.parse("10.005")


@pytest.mark.parametrize(
    ("scale", "minor", "text"),
    [(2, 12550, "125.50"), (2, 1, "0.01"), (2, 0, "0.00"), (0, 42, "42"), (3, 1500, "1.500")],
)
def test_format_round_trips(scale: int, minor: int, text: str) -> None:
    currency = Currency("P2E", scale)
    assert currency.format(minor) == text
    assert currency.parse(text, allow_zero=True) == minor


def test_scale_zero_refuses_fractions() -> None:
    with pytest.raises(InvalidArgument):
        Currency("P2E", 0).parse("1.5")


def test_from_decimal_config_values() -> None:
    assert P2E.from_decimal(Decimal("100.0"), field="initial_balance") == 10000
    for bad in (Decimal("NaN"), Decimal("-1"), Decimal("0.001")):
        with pytest.raises(InvalidArgument):
            P2E.from_decimal(bad, field="initial_balance")
