from __future__ import annotations

from decimal import Decimal

import pytest

from p2e_kit.appconfig import WalletPolicy
from p2e_kit.errors import InvalidArgument
from p2e_ledger_gateway.money import Currency
from p2e_ledger_gateway.policy import NO_POLICY, Policy, Verdict, evaluate, load_policies

P2E = Currency()
POLICY = Policy.from_config(
    "kid",
    WalletPolicy(
        max_per_transfer=Decimal(50),
        daily_cap=Decimal(120),
        allowed_recipients=["alice", "bob"],
        approval_threshold=Decimal("30.5"),
    ),
    P2E,
)


def check(policy: Policy, *, to: str = "alice", amount: int = 1000, spent: int = 0, frozen=False):
    return evaluate(
        policy, frozen=frozen, to_agent=to, amount=amount, spent_last_day=spent, currency=P2E
    )


def test_config_in_minor_units() -> None:
    assert POLICY.max_per_transfer == 5000
    assert POLICY.daily_cap == 12000
    assert POLICY.approval_threshold == 3050
    assert POLICY.allowed_recipients == frozenset({"alice", "bob"})


def test_no_policy_allows_anything() -> None:
    assert check(NO_POLICY, to="anyone", amount=10**17) == (Verdict.ALLOW, None)


def test_frozen_wallet_refused_first() -> None:
    verdict, refusal = check(NO_POLICY, frozen=True)
    assert verdict is Verdict.REFUSE
    assert refusal is not None and refusal.reason == "WALLET_FROZEN"


@pytest.mark.parametrize(
    ("to", "amount", "spent", "reason"),
    [
        ("carol", 100, 0, "RECIPIENT_NOT_ALLOWED"),
        ("alice", 5001, 0, "LIMIT_EXCEEDED"),
        ("alice", 3000, 9001, "DAILY_CAP_EXCEEDED"),
    ],
)
def test_limit_breaches(to: str, amount: int, spent: int, reason: str) -> None:
    verdict, refusal = check(POLICY, to=to, amount=amount, spent=spent)
    assert verdict is Verdict.REFUSE
    assert refusal is not None and refusal.reason == reason


def test_boundaries_are_inclusive() -> None:
    assert check(POLICY, amount=3050, spent=12000 - 3050)[0] is Verdict.ALLOW
    assert check(POLICY, amount=3051)[0] is Verdict.NEEDS_APPROVAL
    assert check(POLICY, amount=5000, spent=7000)[0] is Verdict.NEEDS_APPROVAL


def test_bad_policy_value_names_the_key() -> None:
    with pytest.raises(InvalidArgument, match=r"ledger\.policies\.kid\.daily_cap"):
        load_policies({"kid": WalletPolicy(daily_cap=Decimal("0.001"))}, P2E)
