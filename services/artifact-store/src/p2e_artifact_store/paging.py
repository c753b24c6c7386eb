"""Page tokens of ListArtifacts: opaque to clients, bound to the query they came from."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from p2e_kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after (or, newest first, before) `sequence`."""

    sequence: int
    newest_first: bool


def _fingerprint(conversation_id: str, kind: str, newest_first: bool) -> str:
    text = f"{conversation_id}\x00{kind}\x00{int(newest_first)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is clamped; negative is an error."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode(cursor: Cursor, *, conversation_id: str, kind: str) -> str:
    body = {
        "s": cursor.sequence,
        "n": cursor.newest_first,
        "f": _fingerprint(conversation_id, kind, cursor.newest_first),
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, *, conversation_id: str, kind: str, newest_first: bool) -> Cursor | None:
    """The cursor of a token from a previous page; None for an empty token."""
    if not token:
        return None
    bad = InvalidArgument(
        f"page_token {token!r} is not a token this list returned", field="page_token"
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        sequence, newest, fingerprint = int(body["s"]), bool(body["n"]), str(body["f"])
    except (ValueError, TypeError, KeyError) as exc:
        raise bad from exc
    if newest != newest_first or fingerprint != _fingerprint(conversation_id, kind, newest_first):
        raise InvalidArgument(
            "page_token belongs to a list with other filters or order", field="page_token"
        )
    if sequence < 0:
        raise bad
    return Cursor(sequence, newest)
