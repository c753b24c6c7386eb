"""`python -m p2e_evaluator` / `p2engine-evaluator`."""

from __future__ import annotations

import sys

from p2e_evaluator.config import Settings
from p2e_evaluator.server import start
from p2e_kit.service import run_main


def main() -> int:
    return run_main(Settings(), start)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
