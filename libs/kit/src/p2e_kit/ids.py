"""Identifiers: sortable, prefixed, URL-safe."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """A new id like `tr_0193f3c2a1b47d2e9c0f1a2b3c4d5e6f`: 48 bits of milliseconds, 80 random."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{millis:012x}{os.urandom(10).hex()}"
