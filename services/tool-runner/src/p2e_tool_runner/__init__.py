"""P2Engine tool-runner: the tool registry and SDK, tool execution (cache, dedup,
idempotency) over gRPC and the JetStream work queue."""
