"""The model layer: one port (`ModelPort`), the embedded offline model, litellm for the rest."""

from p2e_orchestrator.llm.offline import OfflineModel
from p2e_orchestrator.llm.port import ModelPort, ModelReply, ToolCallRequest
from p2e_orchestrator.llm.router import build_model_port, resolve_model

__all__ = [
    "ModelPort",
    "ModelReply",
    "OfflineModel",
    "ToolCallRequest",
    "build_model_port",
    "resolve_model",
]
