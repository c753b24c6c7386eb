"""Exact money: decimal strings on the wire, integer minor units everywhere else.

"12.5" at scale 2 is 1250 minor units. Nothing is ever rounded: an amount with more
significant fraction digits than the scale is refused, as are zero, negatives, NaN,
Infinity, exponents, signs, whitespace and anything above `MAX_UNITS` whole units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from p2e_kit.errors import InvalidArgument

# Absurdly large: above 10^15 whole units no amount or balance is plausible.
MAX_UNITS = 10**15
# Minor units must fit a signed 64-bit column even at large scales.
MAX_MINOR = 10**18

_DECIMAL = re.compile(r"^([0-9]*)(?:\.([0-9]*))?$")


@dataclass(frozen=True)
class Currency:
    """The ledger's asset and scale (fraction digits)."""

    asset: str = "P2E"
    scale: int = 2

    @property
    def max_minor(self) -> int:
        return min(MAX_UNITS * 10**self.scale, MAX_MINOR)

    def parse(self, text: str, *, field: str = "amount", allow_zero: bool = False) -> int:
        """Minor units of a decimal string, or InvalidArgument naming `field`."""
        whole, fraction = _split(text, field)
        fraction = fraction.rstrip("0")
        if len(fraction) > self.scale:
            raise InvalidArgument(
                f"{field} {text!r} has more than {self.scale} fraction digits",
                field=field,
                reason="AMOUNT_TOO_PRECISE",
            )
        minor = int(whole or "0") * 10**self.scale + int(fraction.ljust(self.scale, "0") or "0")
        if minor == 0 and not allow_zero:
            raise InvalidArgument(f"{field} must be positive, got {text!r}", field=field)
        if minor > self.max_minor:
            raise InvalidArgument(
                f"{field} {text!r} is too large (at most {self.format(self.max_minor)})",
                field=field,
                reason="AMOUNT_TOO_LARGE",
            )
        return minor

    def from_decimal(self, value: Decimal, *, field: str, allow_zero: bool = False) -> int:
        """Minor units of a configured Decimal (config.json), with the same rules."""
        if not value.is_finite():
            raise InvalidArgument(f"{field} must be a finite number, got {value}", field=field)
        if value < 0:
            raise InvalidArgument(f"{field} must not be negative, got {value}", field=field)
        return self.parse(format(value, "f"), field=field, allow_zero=allow_zero)

    def format(self, minor: int) -> str:
        """The canonical decimal string of `minor` units: always `scale` fraction digits."""
        sign = "-" if minor < 0 else ""
        whole, fraction = divmod(abs(minor), 10**self.scale)
        if self.scale == 0:
            return f"{sign}{whole}"
        return f"{sign}{whole}.{fraction:0{self.scale}d}"


def _split(text: str, field: str) -> tuple[str, str]:
    match = _DECIMAL.match(text)
    if match is None or not any(ch in "0123456789" for ch in text):
        raise InvalidArgument(f"{field} {text!r} {_why_not_decimal(text)}", field=field)
    return match.group(1), match.group(2) or ""


def _why_not_decimal(text: str) -> str:
    if not text:
        return "is empty: want a positive decimal string such as '12.50'"
    try:
        value = Decimal(text)
    except InvalidOperation:
        return "is not a decimal number"
    if not value.is_finite():
        return "is not a finite number"
    if value <= 0:
        return "must be positive"
    return "must be plain digits with an optional '.' (no sign, exponent or spaces)"
