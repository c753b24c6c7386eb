"""`p2engine-ledger-gateway`: serve LedgerService until SIGTERM."""

from __future__ import annotations

from p2e_kit.service import run_main
from p2e_ledger_gateway.config import Settings
from p2e_ledger_gateway.server import start


def main() -> int:
    return run_main(Settings(), start)


if __name__ == "__main__":
    raise SystemExit(main())
