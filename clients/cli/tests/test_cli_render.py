"""render.py's JSON for scripts: the same keys in the same order whatever the values."""

from __future__ import annotations

import json

from p2e_cli import render
from p2engine.common.v1 import common_pb2
from p2engine.ledger.v1 import ledger_pb2, ledger_service_pb2


def transfer(*, replayed: bool) -> ledger_pb2.Transfer:
    return ledger_pb2.Transfer(
        id="tr_1",
        request_id="rid-1",
        from_agent="agent_alpha",
        to_agent="agent_beta",
        amount=common_pb2.Money(amount="1.00", asset="P2E"),
        status=ledger_pb2.TRANSFER_STATUS_SETTLED,
        replayed=replayed,
    )


def test_a_replay_has_the_first_answers_keys_in_the_same_order() -> None:
    first, replay = (
        render.as_dict(transfer(replayed=False)),
        render.as_dict(transfer(replayed=True)),
    )
    assert list(first) == list(replay)
    assert (first["replayed"], replay["replayed"]) == (False, True)
    numbers = {f.name: f.number for f in ledger_pb2.Transfer.DESCRIPTOR.fields}
    assert list(first) == [name for name in sorted(numbers, key=numbers.get) if name in first]


def test_nested_and_repeated_messages_are_in_field_order_too() -> None:
    page = ledger_service_pb2.ListTransactionsResponse(
        transfers=[transfer(replayed=True), transfer(replayed=False)]
    )
    data = render.as_dict(page)
    assert list(data) == ["transfers", "next_page_token"]
    first, second = data["transfers"]
    assert list(first) == list(second)
    assert list(first["amount"]) == ["amount", "asset"]


def test_print_json_is_one_line_with_the_same_values(capsys) -> None:
    render.print_json(transfer(replayed=True))
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert json.loads(line) == render.as_dict(transfer(replayed=True))
