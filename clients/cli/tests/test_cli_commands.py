"""The commands in-process (typer's CliRunner) against in-memory services over real gRPC."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from p2e_cli import endpoints
from p2e_cli.main import app

runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def one_error_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def wallets(fake_services: Any) -> Any:
    assert invoke("ledger", "init", "--balance", "100.0").exit_code == 0
    return fake_services


def test_ledger_init_is_idempotent_and_sent_as_operator(fake_services: Any) -> None:
    first = invoke("ledger", "init", "--balance", "100.0")
    again = invoke("ledger", "init")
    assert first.exit_code == 0, first.output
    assert "Created 3 wallet(s)" in first.stdout
    assert "nothing changed" in again.stdout
    assert set(fake_services.ledger.callers) == {"operator:tester"}


def test_balance_prints_the_server_string(wallets: Any) -> None:
    result = invoke("ledger", "balance", "agent_alpha")
    assert result.exit_code == 0
    assert result.stdout.strip() == "agent_alpha: 100.00 P2E"


def test_balance_json(wallets: Any) -> None:
    result = invoke("ledger", "balance", "agent_alpha", "--json")
    doc = json.loads(result.stdout)
    assert doc["balance"] == {"amount": "100.00", "asset": "P2E"}


def test_balance_without_agent_is_the_overview(wallets: Any) -> None:
    result = invoke("ledger", "balance")
    assert result.exit_code == 0
    for agent in ("agent_alpha", "agent_beta", "treasurer"):
        assert agent in result.stdout
    assert "100.00 P2E" in result.stdout


def test_unknown_wallet_is_one_line_exit_1(wallets: Any) -> None:
    result = invoke("ledger", "balance", "nobody")
    assert result.exit_code == 1
    assert one_error_line(result) == "error: not found: wallet 'nobody' does not exist"


def test_insufficient_funds_is_one_line_exit_1(wallets: Any) -> None:
    result = invoke("ledger", "transfer", "agent_alpha", "agent_beta", "250", "--reason", "x")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "error: failed precondition: insufficient funds: agent_alpha has 100.00 P2E, needs 250.00"
    )


def test_transfer_sends_the_typed_decimal_and_prints_request_id(wallets: Any) -> None:
    result = invoke(
        "ledger", "transfer", "agent_alpha", "agent_beta", "25.5", "--reason", "Payment"
    )
    assert result.exit_code == 0, result.output
    sent = wallets.ledger.requests[-1]
    assert sent.amount == "25.5"  # as typed: no float on the way
    assert sent.request_id.startswith("cli_")
    assert sent.request_id in result.stdout
    assert "SETTLED" in result.stdout
    assert "74.50 P2E" in result.stdout


def test_transfer_keeps_a_given_request_id(wallets: Any) -> None:
    result = invoke(
        "ledger", "transfer", "agent_alpha", "agent_beta", "1", "--request-id", "rid-1", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["request_id"] == "rid-1"


@pytest.mark.parametrize("amount", ["abc", "1e3", "12,5", "NaN", "0", "0.00"])
def test_bad_amount_is_one_line_exit_2_and_nothing_is_sent(wallets: Any, amount: str) -> None:
    result = invoke("ledger", "transfer", "agent_alpha", "agent_beta", amount)
    assert result.exit_code == 2
    assert "amount" in one_error_line(result)
    assert wallets.ledger.requests == []


def test_history_audit_metrics(wallets: Any) -> None:
    invoke("ledger", "transfer", "agent_alpha", "agent_beta", "10", "--reason", "thanks")
    history = invoke("ledger", "history", "agent_alpha", "--limit", "5")
    assert "-10.00 P2E" in history.stdout
    assert "thanks" in history.stdout
    audit = invoke("ledger", "audit", "--since", "2h", "--type", "wallet_created", "--verify")
    assert audit.exit_code == 0, audit.output
    assert "wallet_created" in audit.stdout
    assert "Audit chain valid" in audit.stdout
    request = wallets.ledger.requests[-1]
    assert request.event_type == "wallet_created"
    assert request.since.seconds > 0
    metrics = invoke("ledger", "metrics", "--json")
    assert json.loads(metrics.stdout)["total_supply"]["amount"] == "300.00"


def test_bad_since_is_exit_2(wallets: Any) -> None:
    result = invoke("ledger", "audit", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert "--since" in one_error_line(result)


def test_agent_list(fake_services: Any) -> None:
    result = invoke("agent", "list")
    assert result.exit_code == 0
    assert "agent_alpha" in result.stdout
    assert "offline/p2e" in result.stdout


def test_chat_with_scripted_messages(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", "--message", "Check my balance", "-m", "hello")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "You> Check my balance" in out
    assert "→ check_balance()" in out
    assert "← check_balance:" in out
    assert "agent_alpha> Your balance is 100.00 P2E." in out
    assert "agent_alpha> You said: hello" in out
    assert fake_services.conversations.calls == ["send:Check my balance", "send:hello"]


def test_chat_json_prints_one_document_per_event(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", "-m", "hello", "--json")
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert "conversation" in docs[0]
    kinds = [d["state"]["kind"] for d in docs[1:] if "state" in d]
    assert kinds == ["STATE_KIND_USER_MESSAGE", "STATE_KIND_ASSISTANT_MESSAGE"]
    assert docs[-1]["finished"]["text"] == "You said: hello"


def test_chat_interactive_until_exit(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", input="hello\n\nexit\nnever sent\n")
    assert result.exit_code == 0, result.output
    assert "You> " in result.stdout
    assert "agent_alpha> You said: hello" in result.stdout
    assert fake_services.conversations.calls == ["send:hello"]


def test_chat_interactive_goes_on_after_a_failed_turn(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", input="fail\nhello\n")
    assert result.exit_code == 0, result.output
    assert one_error_line(result) == "error: failed precondition: a turn is already running"
    assert "agent_alpha> You said: hello" in result.stdout


def test_chat_scripted_stops_at_a_failed_turn(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", "-m", "fail", "-m", "hello")
    assert result.exit_code == 1
    assert one_error_line(result) == "error: failed precondition: a turn is already running"
    assert fake_services.conversations.calls == ["send:fail"]


def test_chat_interactive_ends_on_eof(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", input="hello\n")
    assert result.exit_code == 0, result.output
    assert fake_services.conversations.calls == ["send:hello"]


def test_chat_answers_a_question_with_respond_to_user(fake_services: Any) -> None:
    result = invoke("chat", "with", "agent_alpha", "-m", "ask me", "-m", "25")
    assert result.exit_code == 0, result.output
    assert "agent_alpha asks: How much?" in result.stdout
    assert fake_services.conversations.calls == ["send:ask me", "respond:25"]


def test_chat_named_conversation_is_resumed(fake_services: Any) -> None:
    invoke("chat", "with", "agent_alpha", "-c", "demo", "-m", "one")
    result = invoke("chat", "with", "agent_alpha", "-c", "demo", "-m", "two")
    assert result.exit_code == 0, result.output
    assert len(fake_services.conversations.conversations) == 1
    other = invoke("chat", "with", "agent_beta", "-c", "demo", "-m", "three")
    assert other.exit_code == 1
    assert one_error_line(other) == "error: conversation 'demo' is with agent_alpha, not agent_beta"


def test_chat_with_unknown_agent(fake_services: Any) -> None:
    result = invoke("chat", "with", "nobody", "-m", "hi")
    assert result.exit_code == 1
    assert one_error_line(result) == "error: not found: agent 'nobody' does not exist"


def test_unimplemented_rpc_says_so(fake_services: Any) -> None:
    invoke("chat", "with", "agent_alpha", "-c", "c1", "-m", "hi")
    result = invoke("config", "set-tools", "c1", "get_weather,delegate")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "error: unimplemented: overrides arrive with the configuration feature"
    )


def test_unregistered_service_is_unimplemented(fake_services: Any) -> None:
    result = invoke("eval", "list")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "error: unimplemented: the evaluator does not implement this call yet"
    )


def test_conversation_show_and_artifacts_by_name(fake_services: Any) -> None:
    invoke("chat", "with", "agent_alpha", "-c", "named", "-m", "Check my balance")
    show = invoke("conversation", "show", "named")
    assert show.exit_code == 0, show.output
    assert "check_balance" in show.stdout
    artifacts = invoke("artifact", "show", "named", "--limit", "2")
    assert artifacts.exit_code == 0, artifacts.output
    assert "Artifacts of conv_1 (2 of 4)" in artifacts.stdout


def test_shell_runs_lines_and_survives_errors(wallets: Any) -> None:
    lines = [
        "ledger balance agent_alpha",
        "p2engine ledger balance nobody",
        "ledger transfer agent_alpha agent_beta abc",
        "no-such-command",
        "ledger balance 'unclosed",
        "shell",
        "",
        "ledger balance agent_beta",
        "exit",
        "ledger balance treasurer",
    ]
    result = invoke("shell", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert "agent_alpha: 100.00 P2E" in result.stdout
    assert "agent_beta: 100.00 P2E" in result.stdout
    assert "treasurer" not in result.stdout  # after `exit`
    errors = result.stderr.strip().splitlines()
    assert errors[0] == "error: not found: wallet 'nobody' does not exist"
    assert "invalid amount 'abc'" in errors[1]
    assert "no-such-command" in errors[2]
    assert "cannot parse" in errors[3]
    assert errors[4] == "error: already in the shell"
    assert "Traceback" not in result.output


def test_shell_ends_on_eof(fake_services: Any) -> None:
    result = invoke("shell", input="agent list\n")
    assert result.exit_code == 0
    assert "agent_alpha" in result.stdout


def test_demo(fake_services: Any) -> None:
    result = invoke("demo", "--wait", "0")
    assert result.exit_code == 0, result.output
    assert "Wallets ready: 3 (3 created now)." in result.stdout
    assert "agent_alpha> Your balance is 100.00 P2E." in result.stdout
    assert "agent_beta balance: 100.00 P2E" in result.stdout
    assert "Artifacts recorded for conversation conv_1: " in result.stdout
    assert fake_services.conversations.calls == [
        "send:Check my balance",
        "send:Transfer 25 to agent_beta for helping with analysis",
        "send:What's the weather in Paris?",
    ]


def test_every_command_one_line_when_stack_down(isolated_env: dict[str, str]) -> None:
    cases = {
        ("ledger", "balance", "agent_alpha"): "ledger-gateway",
        ("agent", "list"): "orchestrator",
        ("chat", "with", "agent_alpha", "-m", "hi"): "orchestrator",
        ("eval", "list"): "evaluator",
        ("artifact", "show", "system"): "artifact-store",
        ("demo",): "ledger-gateway",
    }
    for args, service in cases.items():
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        info = endpoints.lookup(service)
        assert info is not None
        assert one_error_line(result) == (
            f"error: cannot reach the {service} at {isolated_env[info.addr_env]}: "
            "is the stack running? (`p2engine up`)"
        )


def test_conversation_watch_branches_rewind_checkout(fake_services: Any) -> None:
    invoke("chat", "with", "agent_alpha", "-c", "w", "-m", "Check my balance")
    watch = invoke("conversation", "watch", "w", "--after", "1")
    assert watch.exit_code == 0, watch.output
    assert "You> Check my balance" not in watch.stdout  # seq 1 is skipped
    assert "→ check_balance()" in watch.stdout
    assert "agent_alpha> Your balance is 100.00 P2E." in watch.stdout
    branches = invoke("conversation", "branches", "w", "--json")
    assert json.loads(branches.stdout)["branches"][0]["name"] == "main"
    rewind = invoke("conversation", "rewind", "w", "2", "--branch", "--name", "retry")
    assert rewind.exit_code == 0, rewind.output
    assert "Branch retry (br_2, forked at seq 2, head seq 2) (active)" in rewind.stdout
    assert invoke("conversation", "rewind", "w", "1", "--no-branch").exit_code == 0
    too_far = invoke("conversation", "rewind", "w", "99")
    assert one_error_line(too_far) == "error: invalid argument: seq 99 is beyond the head"
    checkout = invoke("conversation", "checkout", "w", "main")
    assert checkout.exit_code == 0
    assert fake_services.conversations.calls[-4:] == [
        "rewind:2:True:retry",
        "rewind:1:False:",
        "rewind:99:True:",
        "checkout:main",
    ]


def test_rollout_start_follow_and_eval_top(fake_services: Any, tmp_path: Any) -> None:
    config = tmp_path / "demo_rollout.yml"
    config.write_text("teams:\n  weather_team:\n    initial_message: hi\n")
    result = invoke("rollout", "start", str(config), "--follow")
    assert result.exit_code == 0, result.output
    sent = fake_services.rollouts.started[0]
    assert sent.config_yaml == config.read_text()
    assert sent.name == "demo_rollout"
    assert "Rollout demo_rollout (ro_1): running" in result.stdout
    assert "[1/2] weather_team#0 succeeded score 0.500" in result.stdout
    assert "[2/2] weather_team#1 succeeded score 0.750" in result.stdout
    assert "p2engine eval top ro_1 --metric score" in result.stdout
    top = invoke("eval", "top", "ro_1", "--metric", "score", "--json")
    assert [run["id"] for run in json.loads(top.stdout)["runs"]] == ["run_1", "run_0"]
    missing = invoke("eval", "top", "ro_9")
    assert one_error_line(missing) == "error: not found: rollout 'ro_9' does not exist"


def test_rollout_start_bad_file(fake_services: Any, tmp_path: Any) -> None:
    result = invoke("rollout", "start", str(tmp_path / "nope.yml"))
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: cannot read ")
    empty = tmp_path / "empty.yml"
    empty.write_text("{}\n")
    bad = invoke("rollout", "start", str(empty))
    assert bad.exit_code == 1
    assert one_error_line(bad) == "error: invalid argument: the rollout has no teams"
