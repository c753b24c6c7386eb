"""Default addresses of the local stack. Dependency-free: the CLI imports it at start-up."""

DEFAULT_NATS_URL = "nats://127.0.0.1:4225"

# Default loopback ports of the local stack; each can be moved with P2E_<SERVICE>_PORT.
DEFAULT_PORTS = {
    "orchestrator": 50061,
    "tool_runner": 50062,
    "ledger": 50063,
    "evaluator": 50064,
    "artifacts": 50065,
}
