"""SIGTERM as Ctrl-C for the bench scripts.

`timeout` and `kill` send SIGTERM, which by default ends Python at once: the servers, stacks
and throwaway PostgreSQL databases a run started would be left behind. Raised as
KeyboardInterrupt instead, it unwinds the run through its `finally` blocks and context
managers, which stop and drop them.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


def run_interruptible(main: Callable[[], int], name: str) -> int:
    """`main()`'s exit code; 130 after a Ctrl-C or SIGTERM, once what it started is stopped."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted; what it started is stopped", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
