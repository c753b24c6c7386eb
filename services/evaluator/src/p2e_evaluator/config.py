"""Settings of the evaluator (environment prefix P2E_EVALUATOR_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from p2e_kit.settings import DEFAULT_PORTS, Endpoints, ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="P2E_EVALUATOR_", extra="ignore")
    service_name: ClassVar[str] = "evaluator"

    port: int = DEFAULT_PORTS["evaluator"]
    # Where the artifact-store listens; empty: Endpoints().artifacts_addr (P2E_ARTIFACTS_ADDR).
    artifacts_addr: str = ""
    # Deadline of each call to the artifact-store.
    artifacts_deadline_seconds: float = 10.0
    # Model of the LLM judges; empty: each evaluator's own (gpt4_judge: openai/gpt-4o).
    judge_model: str = ""
    # EvaluationCompleted publishing: attempts per evaluation, then a background re-publisher.
    publish_attempts: int = 3
    republish_interval_seconds: float = 10.0

    def artifacts_address(self) -> str:
        return self.artifacts_addr or Endpoints().artifacts_addr
