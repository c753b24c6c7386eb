"""delegate: listed here so models see its schema; the orchestrator executes it (it runs a
child conversation with another agent), so running it in the tool-runner is an error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from p2e_kit.errors import FailedPrecondition
from p2e_tool_runner.sdk import ToolContext, function_tool


class DelegateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    agent_id: str = Field(min_length=1, max_length=200, description="The agent to ask.")
    message: str = Field(min_length=1, description="What to ask the agent to do.")


@function_tool(
    name="delegate",
    description="Delegate a task to another agent and wait for its answer.",
    input_schema=DelegateArgs,
)
async def delegate(ctx: ToolContext, args: DelegateArgs) -> dict[str, Any]:
    raise FailedPrecondition("delegate is executed by the orchestrator")
