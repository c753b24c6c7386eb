"""Opaque page tokens for newest-first lists: base64url JSON {"l": list, "k": key, "a": after}."""

from __future__ import annotations

import base64
import binascii
import json

from p2e_kit.errors import InvalidArgument


def page_size(requested: int, *, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must not be negative, got {requested}", field="page_size")
    return min(requested or default, maximum)


def encode(listing: str, key: str, after: int) -> str:
    raw = json.dumps({"l": listing, "k": key, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, listing: str, key: str) -> int | None:
    """The position after which the next page starts; None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["l"] == listing and data["k"] == key and isinstance(data["a"], int):
            return int(data["a"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise InvalidArgument(
        "page_token is not a token this list returned for this query", field="page_token"
    )
