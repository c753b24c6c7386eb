"""Bearer tokens for the JSON Ledger API: audience-based JWTs, minted here or given.

Canton 3.x accepts audience-based user tokens: `{"aud": <target audience>, "sub": <user id>,
"exp": ...}`; the user's rights (actAs/readAs) live on the participant, not in the token.
HS256 is implemented with hmac/hashlib, so no JWT library is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from p2e_ledger_gateway.canton.config import CantonSettings

# Mint a fresh token this long before the current one expires.
REFRESH_MARGIN_SECONDS = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], secret: bytes | None) -> str:
    """A compact JWT: HS256 when `secret` is given, else unsigned (alg "none")."""
    header = {"alg": "HS256" if secret is not None else "none", "typ": "JWT"}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, claims)
    )
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def decode_jwt(token: str, secret: bytes | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of `token`; with `secret`, the HS256 signature must match."""
    head, body, signature = token.split(".")
    header = json.loads(b64url_decode(head))
    if secret is not None:
        expected = hmac.new(secret, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        if header.get("alg") != "HS256" or not hmac.compare_digest(
            expected, b64url_decode(signature)
        ):
            raise ValueError("bad JWT signature")
    return header, json.loads(b64url_decode(body))


class TokenProvider:
    """The Authorization header value of each call; mints and caches audience-based tokens."""

    def __init__(self, settings: CantonSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    @property
    def user_id(self) -> str:
        return self._settings.user_id

    def token(self) -> str:
        static = self._settings.token
        if static is not None and static.get_secret_value():
            return static.get_secret_value()
        now = self._clock()
        if self._token is None or now >= self._expires_at - REFRESH_MARGIN_SECONDS:
            self._token, self._expires_at = self._mint(now)
        return self._token

    def authorization(self) -> str:
        return f"Bearer {self.token()}"

    def _mint(self, now: float) -> tuple[str, float]:
        settings = self._settings
        expires_at = int(now) + settings.token_ttl_seconds
        claims: dict[str, Any] = {
            "aud": settings.audience,
            "sub": settings.user_id,
            "iat": int(now),
            "exp": expires_at,
        }
        if settings.issuer:
            claims["iss"] = settings.issuer
        secret = settings.hmac_secret
        key = secret.get_secret_value().encode() if secret is not None else None
        return encode_jwt(claims, key), float(expires_at)
