"""Canton 3.x backend of the ledger-gateway: the JSON Ledger API v2 over httpx.

`CantonLedgerBackend.from_config(app_config.ledger)` when `ledger.backend == "canton"`.
See README.md in this folder for running it against a real Canton sandbox.
"""

from p2e_ledger_gateway.canton.backend import (
    CantonHealth,
    CantonLedgerBackend,
    CantonTransfer,
    InitResult,
)
from p2e_ledger_gateway.canton.client import CantonJsonClient
from p2e_ledger_gateway.canton.config import CantonSettings
from p2e_ledger_gateway.canton.contracts import TransferContract, WalletContract
from p2e_ledger_gateway.canton.errors import CantonError

__all__ = [
    "CantonError",
    "CantonHealth",
    "CantonJsonClient",
    "CantonLedgerBackend",
    "CantonSettings",
    "CantonTransfer",
    "InitResult",
    "TransferContract",
    "WalletContract",
]
