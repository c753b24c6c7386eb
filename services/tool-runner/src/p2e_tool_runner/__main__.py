"""`python -m p2e_tool_runner`: serve the tool-runner until SIGTERM."""

from __future__ import annotations

import sys

from p2e_kit.service import run_main
from p2e_tool_runner.config import Settings
from p2e_tool_runner.server import start


def main() -> int:
    return run_main(Settings(), start)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
