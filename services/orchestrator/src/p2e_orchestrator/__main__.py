"""`python -m p2e_orchestrator` / `p2engine-orchestrator`: serve until SIGTERM."""

from __future__ import annotations

import sys

from p2e_kit.service import run_main
from p2e_orchestrator.config import Settings
from p2e_orchestrator.server import start


def main() -> None:
    sys.exit(run_main(Settings(), start))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
