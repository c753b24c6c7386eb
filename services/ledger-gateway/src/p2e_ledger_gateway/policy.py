"""Per-wallet spending policies (config.json `ledger.policies`), in minor units.

`evaluate` is pure: the ledger gives it the payer's state and the amount it already spent
in the last 24 hours, and gets back the refusal (if any) or whether approval is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from p2e_kit.appconfig import WalletPolicy
from p2e_ledger_gateway.money import Currency

DAY_US = 24 * 3600 * 1_000_000


class Verdict(Enum):
    ALLOW = "allow"
    NEEDS_APPROVAL = "needs_approval"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Refusal:
    """Why a transfer is refused: a machine reason and a sentence."""

    reason: str
    description: str


@dataclass(frozen=True)
class Policy:
    max_per_transfer: int | None = None
    daily_cap: int | None = None
    allowed_recipients: frozenset[str] | None = None
    approval_threshold: int | None = None

    @classmethod
    def from_config(cls, agent: str, config: WalletPolicy, currency: Currency) -> Policy:
        def minor(name: str) -> int | None:
            value = getattr(config, name)
            if value is None:
                return None
            return currency.from_decimal(
                value, field=f"ledger.policies.{agent}.{name}", allow_zero=True
            )

        recipients = config.allowed_recipients
        return cls(
            max_per_transfer=minor("max_per_transfer"),
            daily_cap=minor("daily_cap"),
            allowed_recipients=frozenset(recipients) if recipients is not None else None,
            approval_threshold=minor("approval_threshold"),
        )


NO_POLICY = Policy()


def load_policies(configured: Mapping[str, WalletPolicy], currency: Currency) -> dict[str, Policy]:
    """Every configured policy in minor units; InvalidArgument names a bad value."""
    return {agent: Policy.from_config(agent, p, currency) for agent, p in configured.items()}


def evaluate(
    policy: Policy,
    *,
    frozen: bool,
    to_agent: str,
    amount: int,
    spent_last_day: int,
    currency: Currency,
) -> tuple[Verdict, Refusal | None]:
    """The policy verdict for a debit of `amount` (funds are checked by the ledger)."""
    fmt = currency.format
    if frozen:
        return Verdict.REFUSE, Refusal("WALLET_FROZEN", "the payer's wallet is frozen")
    if policy.allowed_recipients is not None and to_agent not in policy.allowed_recipients:
        return Verdict.REFUSE, Refusal(
            "RECIPIENT_NOT_ALLOWED", f"{to_agent} is not among the payer's allowed recipients"
        )
    if policy.max_per_transfer is not None and amount > policy.max_per_transfer:
        return Verdict.REFUSE, Refusal(
            "LIMIT_EXCEEDED",
            f"{fmt(amount)} is above the per-transfer limit of {fmt(policy.max_per_transfer)}",
        )
    if policy.daily_cap is not None and spent_last_day + amount > policy.daily_cap:
        return Verdict.REFUSE, Refusal(
            "DAILY_CAP_EXCEEDED",
            f"{fmt(spent_last_day)} spent in the last 24h plus {fmt(amount)} is above "
            f"the daily cap of {fmt(policy.daily_cap)}",
        )
    if policy.approval_threshold is not None and amount > policy.approval_threshold:
        return Verdict.NEEDS_APPROVAL, None
    return Verdict.ALLOW, None
