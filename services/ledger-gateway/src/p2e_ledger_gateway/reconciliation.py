"""The ledger's periodic reconciliation with its money backend (`Ledger.reconcile`).

Run by the gateway for the Canton backend: once at start-up and then every
`P2E_CANTON_RECONCILE_SECONDS`, so that a transfer Canton committed while the gateway's own
transaction was lost shows in the history, the audit trail and the events even if its caller
never retries. A round that fails (the participant unreachable) is logged and tried again at
the next.
"""

from __future__ import annotations

import asyncio
import logging

from p2e_ledger_gateway.ledger import Ledger

log = logging.getLogger(__name__)


async def reconcile_every(ledger: Ledger, seconds: float) -> None:
    """`ledger.reconcile()` now and every `seconds` after, until cancelled."""
    while True:
        try:
            found = await ledger.reconcile()
        except Exception as exc:
            log.warning("reconciliation with %s failed: %s", ledger.money.name, exc)
        else:
            if found:
                log.warning("reconciliation recorded %d transfer(s)", len(found))
        await asyncio.sleep(seconds)
