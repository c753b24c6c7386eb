"""P2Engine ledger-gateway: wallets, transfers, history and a hash-chained audit log."""
