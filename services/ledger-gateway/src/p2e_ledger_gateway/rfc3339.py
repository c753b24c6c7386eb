"""RFC 3339 UTC timestamps of integer microseconds, as the audit chain and the events write them.

Timestamps come in runs within the same second (a batch of transfers shares one clock
reading), so the date-and-time part is formatted once per second and the fraction appended.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime


@functools.lru_cache(maxsize=64)
def seconds_text(seconds: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of a Unix time in whole seconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def micros_text(micros: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ`: always six fraction digits."""
    seconds, micro = divmod(micros, 1_000_000)
    return f"{seconds_text(seconds)}.{micro:06d}Z"
