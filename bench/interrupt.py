"""SIGTERM as Ctrl-C for the bench scripts, and only the first of them.

`timeout` and `kill` send SIGTERM, which by default ends Python at once: the servers, stacks
and throwaway PostgreSQL databases a run started would be left behind. Raised as
KeyboardInterrupt instead, it unwinds the run through its `finally` blocks and context
managers, which stop and drop them. Signals after the first (a second Ctrl-C, or `kill` of
both `timeout` and the script it forwards its SIGTERM to) are ignored while that runs: each
would have raised again inside the clean-up and cut it short. SIGKILL still ends it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_interruptible(main: Callable[[], int], name: str) -> int:
    """`main()`'s exit code; 130 after a Ctrl-C or SIGTERM, once what it started is stopped."""
    for signum in _SIGNALS:
        signal.signal(signum, _interrupt)
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted; what it started is stopped", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    for other in _SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt
