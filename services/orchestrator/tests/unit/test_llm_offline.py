"""The offline model: the brief's chat lines, multi-step turns, rollout messages, determinism."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from typing import Any

import pytest

from p2e_orchestrator.llm import ModelReply, OfflineModel

MODEL = "offline/p2e"
SCHEMAS: dict[str, dict[str, Any]] = {
    "get_weather": {"city": {"type": "string"}},
    "check_balance": {},
    "transfer_funds": {
        "to_agent": {"type": "string"},
        "amount": {"type": "string"},
        "reason": {"type": "string"},
    },
    "transaction_history": {"limit": {"type": "integer"}},
    "delegate": {"agent_id": {"type": "string"}, "message": {"type": "string"}},
}
ALPHA = ["get_weather", "delegate", "check_balance", "transfer_funds", "transaction_history"]
TREASURER = ["check_balance", "transfer_funds", "transaction_history"]
HELPER = ["get_weather", "check_balance"]


def tools(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"The {name} tool.",
                "parameters": {"type": "object", "properties": SCHEMAS[name]},
            },
        }
        for name in names
    ]


def system(agent: str) -> dict[str, Any]:
    return {"role": "system", "content": f"You are {agent}, an agent of P2Engine."}


def reply(messages: list[dict[str, Any]], names: list[str] = ALPHA) -> ModelReply:
    return OfflineModel().reply(model=MODEL, messages=messages, tools=tools(*names))


def ask(text: str, names: list[str] = ALPHA, agent: str = "agent_alpha") -> ModelReply:
    return reply([system(agent), {"role": "user", "content": text}], names)


def calls(answer: ModelReply) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments)) for c in answer.tool_calls]


class Wallets:
    """A small, real stand-in for the tool-runner and delegation: balances move, errors are real."""

    def __init__(self, me: str = "agent_alpha", balance: str = "100.00") -> None:
        self.me = me
        self.balances = {me: Decimal(balance)}
        self.log: list[dict[str, str]] = []

    def run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "check_balance":
            return {"agent_id": self.me, "balance": f"{self.balances[self.me]:.2f}", "asset": "P2E"}
        if name == "transfer_funds":
            amount = Decimal(args["amount"])
            if amount > self.balances[self.me]:
                # the orchestrator's rendering of a ToolResult with status ERROR
                message = f"balance {self.balances[self.me]:.2f} is below {amount:.2f}"
                return {"error": "INSUFFICIENT_FUNDS", "message": message}
            self.balances[self.me] -= amount
            entry = {"from_agent": self.me, "to_agent": args["to_agent"], "amount": f"{amount:.2f}"}
            self.log.append({**entry, "reason": args.get("reason", "")})
            return {**entry, "new_balance": f"{self.balances[self.me]:.2f}", "asset": "P2E"}
        if name == "get_weather":
            return {"city": args["city"], "condition": "Sunny", "temperature_c": 18}
        if name == "transaction_history":
            return {"transactions": self.log[-args.get("limit", 20) :]}
        if name == "delegate":
            skills = "weather lookups and balance checks" if args["agent_id"] == "child" else "maps"
            return {"agent_id": args["agent_id"], "reply": f"I can do {skills}."}
        raise AssertionError(name)


def chat(
    messages: list[dict[str, Any]], text: str, wallets: Wallets, names: list[str] = ALPHA
) -> tuple[str, list[list[tuple[str, dict[str, Any]]]]]:
    """One user turn run to its final answer, the way the orchestrator drives a model."""
    messages.append({"role": "user", "content": text})
    rounds: list[list[tuple[str, dict[str, Any]]]] = []
    for _ in range(10):
        answer = reply(messages, names)
        if not answer.tool_calls:
            assert answer.content
            messages.append({"role": "assistant", "content": answer.content})
            return answer.content, rounds
        rounds.append(calls(answer))
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in answer.tool_calls
                ],
            }
        )
        for call in answer.tool_calls:
            result = wallets.run(call.name, json.loads(call.arguments))
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
            )
    raise AssertionError("the model kept calling tools")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Check my balance", [("check_balance", {})]),
        ("Check my balance after delegation", [("check_balance", {})]),
        (
            "Transfer 25 to agent_beta for helping with analysis",
            [
                (
                    "transfer_funds",
                    {"to_agent": "agent_beta", "amount": "25", "reason": "helping with analysis"},
                )
            ],
        ),
        (
            "Transfer 50 to treasurer for management fees",
            [
                (
                    "transfer_funds",
                    {"to_agent": "treasurer", "amount": "50", "reason": "management fees"},
                )
            ],
        ),
        (
            "Transfer 50 to agent_beta",
            [("transfer_funds", {"to_agent": "agent_beta", "amount": "50"})],
        ),
        (
            "Transfer 25.5 to agent_beta",
            [("transfer_funds", {"to_agent": "agent_beta", "amount": "25.5"})],
        ),
        (
            "Transfer 25 units to agent_beta",
            [("transfer_funds", {"to_agent": "agent_beta", "amount": "25"})],
        ),
        (
            "Transfer $25 to agent_beta",
            [("transfer_funds", {"to_agent": "agent_beta", "amount": "25"})],
        ),
        ("Send 1,000 P2E to child", [("transfer_funds", {"to_agent": "child", "amount": "1000"})]),
        ("What's the weather in Paris?", [("get_weather", {"city": "Paris"})]),
        ("What's the weather in Paris right now?", [("get_weather", {"city": "Paris"})]),
        (
            "What's the weather in major cities?",
            [("get_weather", {"city": c}) for c in ("Paris", "London", "New York", "Tokyo")],
        ),
        (
            "Delegate to agent_helper: What's the weather in Tokyo?",
            [("delegate", {"agent_id": "agent_helper", "message": "What's the weather in Tokyo?"})],
        ),
        (
            "Delegate to treasurer: Please distribute 100 units equally among agent_beta, agent_helper, and child",
            [
                (
                    "delegate",
                    {
                        "agent_id": "treasurer",
                        "message": "Please distribute 100 units equally among agent_beta, agent_helper, and child",
                    },
                )
            ],
        ),
        ("Show all recent transactions", [("transaction_history", {"limit": 20})]),
        ("Show my last 5 transactions", [("transaction_history", {"limit": 5})]),
        ("How much money do I have?", [("check_balance", {})]),
        ("Is it raining in London?", [("get_weather", {"city": "London"})]),
        (
            "Pay agent_beta 5 for the joke",
            [("transfer_funds", {"to_agent": "agent_beta", "amount": "5", "reason": "the joke"})],
        ),
    ],
)
def test_brief_lines_produce_the_right_tool_calls(text: str, expected: list[Any]) -> None:
    answer = ask(text)
    assert answer.content is None
    assert calls(answer) == expected
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in answer.tool_calls)
    assert len({c.id for c in answer.tool_calls}) == len(answer.tool_calls)
    assert answer.model == MODEL


def test_treasurer_distributes_exact_equal_shares_in_one_reply() -> None:
    text = "Please distribute 100 units equally among agent_beta, agent_helper, and child"
    answer = ask(text, TREASURER, agent="treasurer")
    reason = "equal distribution"
    assert calls(answer) == [
        ("transfer_funds", {"to_agent": "agent_beta", "amount": "33.33", "reason": reason}),
        ("transfer_funds", {"to_agent": "agent_helper", "amount": "33.33", "reason": reason}),
        ("transfer_funds", {"to_agent": "child", "amount": "33.34", "reason": reason}),
    ]


def test_uneven_distribution_still_sums_exactly() -> None:
    answer = ask(
        "Distribute 50.01 units equally among agent_beta, agent_helper and child", TREASURER
    )
    amounts = [Decimal(args["amount"]) for _, args in calls(answer)]
    assert amounts == [Decimal("16.67"), Decimal("16.67"), Decimal("16.67")]
    assert sum(amounts) == Decimal("50.01")


def test_greeting_lists_the_offered_tools_in_plain_words() -> None:
    answer = ask("Hello! What can you do?")
    assert answer.tool_calls == []
    assert answer.content is not None
    for words in ("weather", "balance", "transfer", "transactions", "delegate"):
        assert words in answer.content
    helper = ask("Hello! What can you do?", HELPER, agent="agent_helper")
    assert helper.content is not None and "transfer" not in helper.content
    assert "agent_helper" in helper.content
    treasurer = ask("Hello! What can you do?", TREASURER, agent="treasurer")
    assert treasurer.content is not None and treasurer.content.startswith("Hello! I'm treasurer.")


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Transfer some money to agent_beta", "How much should I transfer to agent_beta?"),
        ("Transfer 25", "Who should I transfer 25.00 P2E to?"),
        ("Transfer 0 to agent_beta", "more than zero"),
        ("Transfer 25.555 to agent_beta", "more than 2 decimal places"),
        ("If they did well, reward them 20 units", "Who should I reward?"),
        ("What's the weather?", "Which city"),
    ],
)
def test_never_guesses_it_asks(text: str, question: str) -> None:
    answer = ask(text)
    assert answer.tool_calls == []
    assert answer.content is not None and question in answer.content


@pytest.mark.parametrize(
    ("text", "names", "refusal"),
    [
        ("Transfer 25 to agent_beta", HELPER, "the transfer_funds tool isn't available"),
        ("Delegate to agent_helper: hi", TREASURER, "the delegate tool isn't available"),
        ("What's the weather in Paris?", TREASURER, "the get_weather tool isn't available"),
        ("Show all recent transactions", HELPER, "the transaction_history tool isn't available"),
    ],
)
def test_tools_not_offered_are_refused_plainly(text: str, names: list[str], refusal: str) -> None:
    answer = ask(text, names)
    assert answer.tool_calls == []
    assert answer.content is not None and refusal in answer.content


def test_unknown_text_gets_a_short_helpful_answer() -> None:
    answer = ask("Tell me about quantum chromodynamics")
    assert answer.tool_calls == []
    assert answer.content is not None
    assert (
        "quantum chromodynamics" in answer.content and "check my wallet balance" in answer.content
    )


def test_brief_chat_session_end_to_end() -> None:
    wallets, messages = Wallets(), [system("agent_alpha")]
    assert chat(messages, "Check my balance", wallets)[0] == "Your balance is 100.00 P2E."
    text, _ = chat(messages, "Transfer 25 to agent_beta for helping with analysis", wallets)
    assert text == (
        "Transferred 25.00 P2E to agent_beta (helping with analysis). Your balance is now 75.00 P2E."
    )
    assert chat(messages, "What's the weather in Paris?", wallets)[0] == "Paris: Sunny, 18°C."
    text, rounds = chat(messages, "Delegate to agent_helper: What's the weather in Tokyo?", wallets)
    assert rounds == [
        [("delegate", {"agent_id": "agent_helper", "message": "What's the weather in Tokyo?"})]
    ]
    assert text == "agent_helper replied: I can do maps."
    text, rounds = chat(messages, "If they did well, reward them 20 units", wallets)
    reward = {"to_agent": "agent_helper", "amount": "20", "reason": "reward for delegated work"}
    assert rounds == [[("transfer_funds", reward)]]
    assert text.endswith("Your balance is now 55.00 P2E.")
    text, rounds = chat(messages, "Show all recent transactions", wallets)
    assert rounds == [[("transaction_history", {"limit": 20})]]
    assert "agent_alpha -> agent_beta: 25.00 P2E (helping with analysis)" in text
    assert "agent_alpha -> agent_helper: 20.00 P2E (reward for delegated work)" in text


def test_multiple_cities_answer_one_line_each_and_stop() -> None:
    messages = [system("agent_alpha")]
    text, rounds = chat(messages, "What's the weather in major cities?", Wallets())
    assert len(rounds) == 1 and len(rounds[0]) == 4
    assert text.splitlines() == [
        f"{c}: Sunny, 18°C." for c in ("Paris", "London", "New York", "Tokyo")
    ]


def test_error_results_are_explained() -> None:
    text, _ = chat([system("agent_alpha")], "Transfer 500 to agent_beta", Wallets())
    assert text == (
        "I couldn't transfer 500.00 P2E to agent_beta: insufficient funds (balance 100.00 is below 500.00)."
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"status": "error", "error_code": "PERMISSION_DENIED", "error_message": ""}',
            "not permitted",
        ),
        (
            '{"error": "RESOURCE_EXHAUSTED", "message": "daily cap 200.00"}',
            "limit was reached (daily cap",
        ),
        (
            '{"error": "NO_RESULT", "message": "the call never returned a result"}',
            ": the call never",
        ),
        (
            '{"error": {"code": "NOT_FOUND", "message": "no wallet ghost"}}',
            "not found (no wallet ghost)",
        ),
        ("Error: ledger unavailable", "ledger unavailable"),
    ],
)
def test_error_result_shapes(content: str, expected: str) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "transfer_funds", "arguments": '{"to_agent": "ghost", "amount": "5"}'},
    }
    messages = [
        system("agent_alpha"),
        {"role": "user", "content": "Transfer 5 to ghost"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": content},
    ]
    answer = reply(messages)
    assert answer.tool_calls == []
    assert answer.content is not None
    assert answer.content.startswith("I couldn't transfer 5.00 P2E to ghost")
    assert expected in answer.content


def test_nested_result_json_and_content_parts_are_read() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "check_balance", "arguments": "{}"},
    }
    messages = [
        system("agent_alpha"),
        {"role": "user", "content": [{"type": "text", "text": "Check my balance"}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": json.dumps({"status": "ok", "result_json": '{"balance": "12.5"}'}),
        },
    ]
    assert reply(messages).content == "Your balance is 12.50 P2E."


def test_reward_after_failed_delegation_is_declined() -> None:
    call = {
        "id": "d1",
        "type": "function",
        "function": {
            "name": "delegate",
            "arguments": '{"agent_id": "agent_helper", "message": "hi"}',
        },
    }
    messages = [
        system("agent_alpha"),
        {"role": "user", "content": "Delegate to agent_helper: hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "d1",
            "content": '{"status": "error", "error_message": "agent_helper timed out"}',
        },
        {"role": "assistant", "content": "I couldn't delegate to agent_helper."},
        {"role": "user", "content": "If they did well, reward them 20 units"},
    ]
    answer = reply(messages)
    assert answer.tool_calls == []
    assert answer.content is not None and "won't reward" in answer.content


def test_delegation_chain_with_treasurer() -> None:
    alpha, messages = Wallets(), [system("agent_alpha")]
    chat(messages, "Check my balance", alpha)
    _, rounds = chat(
        messages,
        "Delegate to treasurer: Please distribute 100 units equally among agent_beta, agent_helper, and child",
        alpha,
    )
    delegated = rounds[0][0][1]["message"]
    treasurer = Wallets("treasurer")
    text, t_rounds = chat([system("treasurer")], delegated, treasurer, TREASURER)
    assert [args["amount"] for _, args in t_rounds[0]] == ["33.33", "33.33", "33.34"]
    assert text.endswith("Your balance is now 0.00 P2E.")
    assert (
        chat(messages, "Check my balance after delegation", alpha)[0]
        == "Your balance is 100.00 P2E."
    )


PAYMENT_TASK = """PAYMENT COORDINATOR TASK:

1. Check your own balance
2. Check agent_helper's balance
3. Transfer 15 units to agent_helper

Reason: "Payment for weather information services"

You MUST complete the transfer to finish this task.
"""
MERIT_TASK = """TREASURER DUTIES - MUST COMPLETE:

1. Use check_balance on agent_alpha
2. Use check_balance on agent_beta
3. Decide who deserves a reward (if unsure, choose randomly)
4. Use transfer_funds to send 25 units to your chosen agent

Reason: "Performance reward from treasurer"

This is a required task. You must transfer 25 units to either agent_alpha or agent_beta.
"""
EQUAL_TASK = """Project Manager Task:
1. Check balances for agent_helper and child
2. Transfer 25 units to agent_helper (reason: "Equal team distribution")
3. Transfer 25 units to child (reason: "Equal team distribution")

Complete all transfers to finish your management task.
"""
MERIT_TEAM_TASK = """Project Manager Task:
1. Delegate to agent_helper: "What are your key skills?"
2. Delegate to child: "What are your key skills?"
3. After receiving both responses, distribute 50 units total based on merit
4. Use transfer_funds to give more to the stronger contributor

You must distribute the full 50 units. Complete all transfers.
"""


def test_rollout_payment_task_checks_then_pays() -> None:
    text, rounds = chat(
        [system("agent_alpha")], PAYMENT_TASK, Wallets(), ["check_balance", "transfer_funds"]
    )
    reason = "Payment for weather information services"
    assert rounds == [
        [("check_balance", {})],
        [("transfer_funds", {"to_agent": "agent_helper", "amount": "15", "reason": reason})],
    ]
    assert "Your balance is now 85.00 P2E." in text
    assert "couldn't check the balance of agent_helper" in text


def test_rollout_merit_task_picks_deterministically_and_explains() -> None:
    text, rounds = chat([system("treasurer")], MERIT_TASK, Wallets("treasurer"), TREASURER)
    reason = "Performance reward from treasurer"
    assert rounds == [
        [("transfer_funds", {"to_agent": "agent_alpha", "amount": "25", "reason": reason})]
    ]
    assert "I chose agent_alpha over agent_beta" in text


def test_rollout_equal_team_distribution() -> None:
    names = ["check_balance", "transfer_funds", "delegate"]
    _, rounds = chat([system("agent_alpha")], EQUAL_TASK, Wallets(), names)
    reason = "Equal team distribution"
    assert rounds == [
        [("transfer_funds", {"to_agent": "agent_helper", "amount": "25", "reason": reason})],
        [("transfer_funds", {"to_agent": "child", "amount": "25", "reason": reason})],
    ]


def test_rollout_merit_team_delegates_then_distributes_everything() -> None:
    names = ["check_balance", "transfer_funds", "delegate"]
    text, rounds = chat([system("agent_alpha")], MERIT_TEAM_TASK, Wallets(), names)
    assert [r[0][0] for r in rounds] == ["delegate", "delegate", "transfer_funds"]
    shares = {args["to_agent"]: Decimal(args["amount"]) for _, args in rounds[2]}
    assert sum(shares.values()) == Decimal(50)
    assert shares["child"] > shares["agent_helper"]  # the longer, stronger answer
    assert "Your balance is now 50.00 P2E." in text


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        (
            "Provide weather information for Paris, Tokyo, and San Francisco.\nUse the get_weather tool for each city.\n",
            HELPER,
            [("get_weather", {"city": c}) for c in ("Paris", "Tokyo", "San Francisco")],
        ),
        (
            "You are coordinating payment for weather services.\nAgent_helper has just provided weather "
            "information.\nYour task is to compensate them for their work.\n",
            ["check_balance", "transfer_funds"],
            "How much should I transfer to agent_helper?",
        ),
        (
            "You are a project manager with a budget to distribute.\nDistribute 50 units total to your team members.\n",
            ["check_balance", "transfer_funds", "delegate"],
            "Who should receive the 50.00 P2E?",
        ),
        (
            "Solve this: What's the optimal way to distribute 100 units\namong 5 agents to maximize productivity?\n"
            "Consider that each agent has different skills and efficiency levels.\n"
            "Provide a clear mathematical justification.\n",
            ["check_balance"],
            "100 / 5 = 20.00 units each",
        ),
    ],
)
def test_rollout_initial_messages(text: str, names: list[str], expected: Any) -> None:
    answer = ask(text, names)
    if isinstance(expected, str):
        assert answer.tool_calls == []
        assert answer.content is not None and expected in answer.content
    else:
        assert calls(answer) == expected


@pytest.mark.parametrize(
    ("text", "check"),
    [
        (
            "Write a hilarious 10-sentence story describing life on the ISS.\nFinish with a clever pun as the final sentence.",
            lambda out: len(re.findall(r"[.!?](?:'|\s|$)", out)) >= 10 and "ISS" in out,
        ),
        (
            "In **exactly eight sentences**, tell a funny anecdote about zero-gravity hiccups, ending with a joke.",
            lambda out: "hiccup" in out,
        ),
        (
            "Draft a serious technical memo about waste-management on the ISS.\nDo **not** use any humour or jokes.",
            lambda out: out.startswith("Subject:") and "pun" not in out.lower(),
        ),
        (
            "Give me six random space puns in bullet points.",
            lambda out: (
                len(out.splitlines()) == 6 and all(x.startswith("- ") for x in out.splitlines())
            ),
        ),
        (
            "Produce five original space-themed puns, each on a new line.\nFinish with the cheesiest one last.",
            lambda out: len(out.splitlines()) == 5,
        ),
        (
            "List six facts about the International Space Station. No jokes.",
            lambda out: len(out.splitlines()) == 6 and out.startswith("1. "),
        ),
        ("Tell me a joke", lambda out: "?" in out),
    ],
)
def test_joke_rollout_messages_get_sized_text(text: str, check: Any) -> None:
    answer = ask(text, [])
    assert answer.tool_calls == []
    assert answer.content is not None and check(answer.content)
    assert ask(text, []) == answer


async def test_deterministic_and_temperature_is_ignored() -> None:
    model = OfflineModel()
    messages = [
        system("agent_alpha"),
        {"role": "user", "content": "What's the weather in major cities?"},
    ]
    cold = await model.complete(
        model=MODEL, messages=messages, tools=tools(*ALPHA), temperature=0.0
    )
    hot = await model.complete(model=MODEL, messages=messages, tools=tools(*ALPHA), temperature=1.5)
    again = await OfflineModel().complete(model=MODEL, messages=list(messages), tools=tools(*ALPHA))
    assert cold == hot == again
    other = [system("agent_alpha"), {"role": "user", "content": "What's the weather in Paris?"}]
    assert ask("What's the weather in Paris?").tool_calls[0].id != cold.tool_calls[0].id
    assert reply(other).tool_calls[0].id == ask("What's the weather in Paris?").tool_calls[0].id


def test_reply_takes_microseconds() -> None:
    messages = [
        system("agent_alpha"),
        {"role": "user", "content": "Transfer 25 to agent_beta for helping"},
    ]
    offered = tools(*ALPHA)
    model = OfflineModel()
    start = time.perf_counter()
    for _ in range(200):
        model.reply(model=MODEL, messages=messages, tools=offered)
    assert (time.perf_counter() - start) / 200 < 0.002  # ~40 µs measured; generous for slow CI


@pytest.mark.parametrize(
    ("first", "answer", "expected"),
    [
        (
            "Transfer some money to agent_beta for the report",
            "25 units",
            [
                (
                    "transfer_funds",
                    {"to_agent": "agent_beta", "amount": "25", "reason": "the report"},
                )
            ],
        ),
        (
            "Transfer 25",
            "agent_beta",
            [("transfer_funds", {"to_agent": "agent_beta", "amount": "25"})],
        ),
        ("What's the weather?", "new york", [("get_weather", {"city": "New York"})]),
        (
            "Distribute 50 units total to your team members.",
            "agent_helper and child",
            [
                (
                    "transfer_funds",
                    {"to_agent": "agent_helper", "amount": "25.00", "reason": "equal distribution"},
                ),
                (
                    "transfer_funds",
                    {"to_agent": "child", "amount": "25.00", "reason": "equal distribution"},
                ),
            ],
        ),
    ],
)
def test_a_short_answer_to_its_question_completes_the_request(
    first: str, answer: str, expected: list[Any]
) -> None:
    messages = [system("agent_alpha"), {"role": "user", "content": first}]
    question = reply(messages)
    assert question.tool_calls == [] and question.content is not None and "?" in question.content
    messages += [
        {"role": "assistant", "content": question.content},
        {"role": "user", "content": answer},
    ]
    assert calls(reply(messages)) == expected


def test_a_new_request_after_a_question_is_read_on_its_own() -> None:
    messages = [
        system("agent_alpha"),
        {"role": "user", "content": "Transfer some money to agent_beta"},
        {"role": "assistant", "content": "How much should I transfer to agent_beta?"},
        {"role": "user", "content": "Check my balance"},
    ]
    assert calls(reply(messages)) == [("check_balance", {})]
    messages[-1] = {"role": "user", "content": "0"}
    answer = reply(messages)
    assert (
        answer.tool_calls == []
        and answer.content is not None
        and "more than zero" in answer.content
    )
