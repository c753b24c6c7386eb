"""How the Canton backend reaches and authenticates to a participant (environment `P2E_CANTON_*`).

Where the JSON Ledger API lives and which party issues the wallets come from `config.json`
(`ledger.json_api_url`, `ledger.party_id`); everything about tokens and retries is here, so
no secret ever sits in a config file.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The package name of services/ledger-gateway/daml/daml.yaml; templates are addressed by it
# (`#p2engine-wallet:Wallet:Wallet`), so uploading a new DAR version needs no config change.
DEFAULT_PACKAGE_NAME = "p2engine-wallet"


class CantonSettings(BaseSettings):
    """Token, identity and retry knobs of the Canton adapter."""

    model_config = SettingsConfigDict(env_prefix="P2E_CANTON_", extra="ignore")

    # A ready-made bearer token (e.g. from your IdP); when set, no token is minted.
    token: SecretStr | None = None
    # Shared secret to mint HS256 tokens (a participant configured with `hs-256-unsafe`).
    # Neither token nor secret: an unsigned (alg "none") token, fine for an auth-less sandbox.
    hmac_secret: SecretStr | None = None
    # `aud` of minted tokens: the participant's target audience
    # (e.g. "https://daml.com/jwt/aud/participant/<participant-id>").
    audience: str = "https://daml.com/jwt/aud/participant/sandbox"
    # `sub` of minted tokens and the `userId` of commands: the participant user P2Engine acts as.
    user_id: str = "p2engine"
    # `iss` of minted tokens; empty leaves it out.
    issuer: str = ""
    token_ttl_seconds: int = 300

    # Create the user and grant it actAs/readAs on the issuer party at init (needs admin rights).
    manage_users: bool = True
    package_name: str = DEFAULT_PACKAGE_NAME

    # One HTTP call: its timeout, and attempts on 5xx / 429 / timeouts / connection errors.
    timeout_seconds: float = 10.0
    http_attempts: int = 3
    # Attempts of a transfer that hits contention (locked or already archived contracts).
    contention_attempts: int = 3
    # Backoff between attempts: doubles from min to max.
    backoff_min_seconds: float = 0.1
    backoff_max_seconds: float = 2.0
    # Page size of party listings.
    page_size: int = 1000
    # How often the gateway looks for transfers Canton settled that its database never
    # recorded (a crash between the two commits, no retry), and records them; also once at
    # start-up. 0: never.
    reconcile_seconds: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.backoff_max_seconds, self.backoff_min_seconds * 2 ** (attempt - 1))
