"""Checks of what the user typed, before anything is sent: one line and exit 2 when bad."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AMOUNT = re.compile(r"^\d+(\.\d+)?$|^\.\d+$")
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def amount(text: str, what: str = "amount", *, allow_zero: bool = False) -> str:
    """The decimal string as typed ("25", "25.50"); never through a float."""
    from p2e_cli.rpc import fail

    value = text.strip()
    if not _AMOUNT.match(value):
        fail(f"invalid {what} {text!r}: want a decimal number such as 25 or 25.50", code=2)
    if not allow_zero and not value.replace("0", "").replace(".", ""):
        fail(f"invalid {what} {text!r}: must be more than zero", code=2)
    return value


def since(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime from ISO 8601 ("2024-05-01T10:00") or an age ("30m", "2h", "7d")."""
    from p2e_cli.rpc import fail

    value = text.strip().lower()
    match = _RELATIVE.match(value)
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"invalid --since {text!r}: want an ISO time or an age like 30m, 2h, 7d", code=2)
    return parsed if parsed.tzinfo else parsed.astimezone()


def csv_list(text: str) -> list[str]:
    """["a", "b"] from "a, b,,b" (order kept, duplicates and blanks dropped)."""
    seen: dict[str, None] = {}
    for part in text.split(","):
        if part.strip():
            seen.setdefault(part.strip(), None)
    return list(seen)
