"""A stand-in for one P2Engine service in the supervisor tests: a real gRPC health server on
the port the supervisor assigned (P2E_<X>_PORT), nothing else. Behaviour switches:

    STANDIN_CRASH=<key>          exit 3 at start-up after a log line
    STANDIN_IGNORE_TERM=<key>    ignore SIGTERM (the supervisor must SIGKILL)
    STANDIN_SLOW=<key>           serve, but stay NOT_SERVING
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

PREFIXES = {
    "artifacts": "P2E_ARTIFACTS_",
    "ledger": "P2E_LEDGER_",
    "tool_runner": "P2E_TOOL_RUNNER_",
    "orchestrator": "P2E_ORCHESTRATOR_",
    "evaluator": "P2E_EVALUATOR_",
}


async def main(key: str) -> int:
    snapshot = {k: v for k, v in os.environ.items() if k.startswith("P2E_")}
    data_dir = Path(os.environ["P2E_DATA_DIR"])
    (data_dir / f"standin_{key}.json").write_text(json.dumps(snapshot))
    if os.environ.get("STANDIN_CRASH") == key:
        print(f"standin {key}: boom, cannot open the database", flush=True)
        return 3
    port = int(os.environ[PREFIXES[key] + "PORT"])
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING
    if os.environ.get("STANDIN_SLOW") == key:
        status = health_pb2.HealthCheckResponse.NOT_SERVING
    await servicer.set("", status)
    print(f"standin {key} serving on {port}", flush=True)
    stop = asyncio.Event()
    if os.environ.get("STANDIN_IGNORE_TERM") == key:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
