"""End to end through the real processes: `p2engine up`, a chat through the CLI, an
independent plain nats-py subscriber checking that every appended interaction state arrived
as an artifact event, bad input that changes no balance, `p2engine down`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from p2e_kit.natsd import port_open
from p2e_kit.stackenv import isolated_stack_env
from p2engine.artifacts.v1 import artifacts_pb2

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
P2ENGINE = str(Path(sys.executable).parent / "p2engine")


def run(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [P2ENGINE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(env: dict[str, str], *args: str) -> str:
    done = run(env, *args)
    assert done.returncode == 0, f"p2engine {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2E_")}
    env.update(isolated_stack_env(data, REPO / "config"))
    env.update(P2E_LLM_OFFLINE_ONLY="1", USER="e2e")
    ok(env, "up")
    try:
        yield env
    finally:
        down = run(env, "down")
        assert down.returncode == 0, down.stderr
        host, port = env["P2E_LEDGER_ADDR"].split(":")
        assert not port_open(host, int(port)), "down left the ledger-gateway running"


def balance(env: dict[str, str], agent: str) -> str:
    return json.loads(ok(env, "ledger", "balance", agent, "--json"))["balance"]["amount"]


def chat(env: dict[str, str], *messages: str) -> list[dict]:
    args = ["chat", "with", "agent_alpha", "--json"]
    for message in messages:
        args += ["--message", message]
    return [json.loads(line) for line in ok(env, *args).splitlines() if line.strip()]


async def artifact_ids_on_bus(nats_url: str, conversation_id: str, want: set[str]) -> set[str]:
    """Read the artifact stream with a plain nats-py consumer, as any subscriber would."""
    nc = await nats.connect(nats_url)
    seen: set[str] = set()
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"p2e.artifacts.{conversation_id}.>", ordered_consumer=True)
        deadline = asyncio.get_running_loop().time() + 20
        while not want <= seen and asyncio.get_running_loop().time() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                continue
            artifact = artifacts_pb2.Artifact.FromString(msg.data)
            assert msg.headers["Nats-Msg-Id"] == artifact.id
            assert artifact.conversation_id == conversation_id
            seen.add(artifact.id)
    finally:
        await nc.close()
    return seen


def test_chat_pays_and_every_state_becomes_an_artifact(stack: dict[str, str]) -> None:
    ok(stack, "ledger", "init", "--balance", "100")
    assert balance(stack, "agent_alpha") == "100.00"

    events = chat(stack, "Check my balance", "Transfer 25 to agent_beta for helping with analysis")
    conversation_id = events[0]["conversation"]["id"]
    states = [e["state"] for e in events if "state" in e]
    finished = [e["finished"] for e in events if "finished" in e]
    assert len(finished) == 2
    assert "100.00" in finished[0]["text"]
    assert "agent_beta" in finished[1]["text"]
    tools = [s["target"] for s in states if s["kind"] == "STATE_KIND_TOOL_CALL"]
    assert tools == ["check_balance", "transfer_funds"]

    assert balance(stack, "agent_beta") == "125.00"
    assert balance(stack, "agent_alpha") == "75.00"

    want = {s["id"] for s in states}
    seen = asyncio.run(artifact_ids_on_bus(stack["P2E_NATS_URL"], conversation_id, want))
    assert want <= seen, f"states missing on the artifact bus: {want - seen}"

    shown = ok(stack, "artifact", "show", conversation_id, "--limit", "100")
    assert "tool_result" in shown


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("agent_alpha", "nobody", "5"), 1, "not found"),
        (("agent_alpha", "agent_beta", "-5"), 2, "amount"),
        (("agent_alpha", "agent_beta", "abc"), 2, "amount"),
        (("agent_alpha", "agent_beta", "1.234"), 1, "invalid argument"),
        (("agent_alpha", "agent_beta", "500"), 1, "insufficient"),
        (("agent_alpha", "agent_beta", "100000"), 1, "limit"),
    ],
)
def test_bad_transfers_are_one_line_and_change_nothing(
    stack: dict[str, str], args: tuple[str, ...], code: int, words: str
) -> None:
    ok(stack, "ledger", "init")
    before = {a: balance(stack, a) for a in ("agent_alpha", "agent_beta")}
    done = run(stack, "ledger", "transfer", *args, "--reason", "e2e")
    assert done.returncode == code, done.stderr + done.stdout
    message = done.stderr.strip()
    assert "Traceback" not in done.stderr
    assert len(message.splitlines()) == 1, message
    assert words in message.lower()
    assert {a: balance(stack, a) for a in before} == before


def test_unknown_agent_chat_is_one_line(stack: dict[str, str]) -> None:
    done = run(stack, "chat", "with", "nobody", "--message", "hi")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "not found" in done.stderr.lower()


def test_nats_down_is_a_clear_start_up_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2E_")}
    env.update(isolated_stack_env(tmp_path / "data", REPO / "config"))
    done = subprocess.run(
        [sys.executable, "-m", "p2e_orchestrator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot reach nats-server" in done.stderr
    assert "Traceback" not in done.stderr
