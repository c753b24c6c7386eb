"""Settings of the artifact-store (environment prefix P2E_ARTIFACTS_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from p2e_artifact_store.model import INLINE_LIMIT_BYTES
from p2e_kit.settings import DEFAULT_PORTS, ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="P2E_ARTIFACTS_", extra="ignore")
    service_name: ClassVar[str] = "artifacts"

    port: int = DEFAULT_PORTS["artifacts"]
    # Payloads above this go to the blobs table.
    inline_limit_bytes: int = INLINE_LIMIT_BYTES
    # Largest payload PutArtifact accepts (GetArtifact returns it in one message).
    max_artifact_bytes: int = 8 * 1024 * 1024
    # Bus messages fetched (and stored in one transaction) at a time.
    ingest_batch: int = 256
    ingest_fetch_timeout_seconds: float = 1.0
    # Live watchers also re-read this often, to see rows written by other replicas.
    watch_poll_seconds: float = 2.0
