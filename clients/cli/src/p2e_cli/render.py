"""Rich tables and lines for what the services answer.

Money is printed as the server's decimal string ("125.50 P2E"), never through a float.
Everything here is imported lazily by the commands (Rich and protobuf cost ~60 ms).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 200
# Ids are copied and pasted: never wrapped.
NO_WRAP = {"id", "transfer", "run", "conversation", "evaluation", "agent", "service", "address"}
RIGHT_ALIGNED = {"balance", "amount", "sent", "received", "seq", "#", "score", "size", "count"}


def console() -> Console:
    """A console on the current sys.stdout (CliRunner and the shell swap it). Not a terminal
    (a pipe, a file): wide enough that ids and amounts are never cut."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(highlight=False, width=width)


def out(text: str = "", *, style: str | None = None) -> None:
    """One line on stdout; `text` may hold Rich markup, so escape untrusted parts."""
    console().print(text, style=style, soft_wrap=True)


def show(renderable: Any) -> None:
    console().print(renderable)


def as_dict(message: Message) -> dict[str, Any]:
    """The message as JSON-ready data, every field present, keys in field-number order
    (MessageToDict puts the fields left at their default after the others, so the same
    message type would come out in another order when, say, `replayed` is true)."""
    data = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _in_field_order(message.DESCRIPTOR, data)


def _in_field_order(descriptor: Any, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (MessageToDict of a `descriptor` message) with its keys in field-number order,
    nested messages too; keys that are not fields (a Struct's, an Any's) keep their order."""
    ordered: dict[str, Any] = {}
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        if field.name not in data:
            continue
        value = data[field.name]
        nested = field.message_type
        if nested is not None and not nested.GetOptions().map_entry:
            if isinstance(value, dict):
                value = _in_field_order(nested, value)
            elif isinstance(value, list):
                value = [_in_field_order(nested, v) if isinstance(v, dict) else v for v in value]
        ordered[field.name] = value
    return ordered | {key: value for key, value in data.items() if key not in ordered}


def print_json(value: Message | dict[str, Any] | list[Any]) -> None:
    """One JSON document on one line (for scripts: `--json`)."""
    data = as_dict(value) if isinstance(value, Message) else value
    print(json.dumps(data, ensure_ascii=False), flush=True)


def money(m: Any) -> str:
    """A common.v1.Money as "125.50 P2E" (the server's string); "" when unset."""
    if not m.amount:
        return ""
    return f"{m.amount} {m.asset}".strip()


def when(ts: Any) -> str:
    """Local time of a protobuf Timestamp; "" when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    return datetime.fromtimestamp(ts.seconds).strftime("%Y-%m-%d %H:%M:%S")


def enum_label(enum_type: Any, value: int, prefix: str) -> str:
    """An enum value's name without its prefix: SETTLED for TRANSFER_STATUS_SETTLED."""
    try:
        return str(enum_type.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def shorten(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table; str cells are escaped, `Text` cells keep their style."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(
            column,
            justify="right" if column in RIGHT_ALIGNED else "left",
            no_wrap=column in NO_WRAP,
        )
    for row in rows:
        t.add_row(*(cell if isinstance(cell, Text) else escape(str(cell)) for cell in row))
    return t


def styled(text: str, style: str) -> Text:
    return Text(text, style=style)


def key_values(title: str | None, pairs: Sequence[tuple[str, Any]]) -> RenderableType:
    """Labelled values, one per line, under an optional title."""
    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for key, value in pairs:
        t.add_row(key, value if isinstance(value, Text) else escape(str(value)))
    return Group(Text(title, style="bold"), t) if title else t


def health_style(health: str) -> Text:
    style = {"SERVING": "green", "running": "green", "NOT_SERVING": "yellow"}.get(health, "red")
    return Text(health, style=style)


# --- ledger ----------------------------------------------------------------------------------


def wallets_table(wallets: Sequence[Any], title: str | None = None) -> Table:
    return table(
        title,
        ["agent", "balance", "frozen", "sent", "received", "last activity"],
        [
            (
                w.agent_id,
                money(w.balance),
                styled("frozen", "red") if w.frozen else "",
                str(w.sent_count),
                str(w.received_count),
                when(w.last_activity_time),
            )
            for w in wallets
        ],
    )


def transfer_status(transfer: Any) -> str:
    from p2engine.ledger.v1 import ledger_pb2

    return enum_label(ledger_pb2.TransferStatus, transfer.status, "TRANSFER_STATUS_")


def transfer_view(transfer: Any) -> RenderableType:
    status = transfer_status(transfer)
    color = {"SETTLED": "green", "PENDING_APPROVAL": "yellow"}.get(status, "red")
    pairs: list[tuple[str, Any]] = [
        ("transfer", transfer.id),
        ("status", styled(status + (" (replayed)" if transfer.replayed else ""), color)),
        ("from → to", f"{transfer.from_agent} → {transfer.to_agent}"),
        ("amount", money(transfer.amount)),
        ("reason", transfer.reason),
    ]
    if transfer.failure_reason:
        pairs.append(("failure", transfer.failure_reason))
    if transfer.from_balance_after.amount:
        pairs.append((f"{transfer.from_agent} now", money(transfer.from_balance_after)))
    pairs += [("initiated by", transfer.initiated_by), ("request id", transfer.request_id)]
    return key_values(None, pairs)


def transfers_table(agent: str, transfers: Sequence[Any]) -> Table:
    rows = []
    for t in transfers:
        sent = t.from_agent == agent
        sign = ("-" if sent else "+") if transfer_status(t) == "SETTLED" else ""
        rows.append(
            (
                when(t.create_time),
                "sent" if sent else "received",
                t.to_agent if sent else t.from_agent,
                sign + money(t.amount),
                transfer_status(t),
                shorten(t.reason, 40),
                t.id,
            )
        )
    columns = ["time", "direction", "counterparty", "amount", "status", "reason", "transfer"]
    return table(f"Transactions of {agent}", columns, rows)


def audit_table(events: Sequence[Any]) -> Table:
    return table(
        "Ledger audit trail (newest first)",
        ["seq", "time", "type", "actor", "agent", "transfer", "hash"],
        [
            (
                str(e.sequence),
                when(e.create_time),
                e.event_type,
                e.actor,
                e.agent_id,
                e.transfer_id,
                e.hash[:12],
            )
            for e in events
        ],
    )


def metrics_view(m: Any) -> RenderableType:
    conserved = _same_amount(m.total_supply.amount, m.total_minted.amount)
    return key_values(
        "Ledger metrics",
        [
            ("total supply", money(m.total_supply)),
            ("total minted", money(m.total_minted)),
            ("conserved", styled("yes", "green") if conserved else styled("NO", "red")),
            ("volume", money(m.volume)),
            ("settled transfers", str(m.transaction_count)),
            ("failed transfers", str(m.failed_count)),
            ("pending approval", str(m.pending_count)),
            ("wallets", str(m.wallet_count)),
        ],
    )


def _same_amount(a: str, b: str) -> bool:
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(a or "0") == Decimal(b or "0")
    except InvalidOperation:
        return a == b


def _batches_text(batches: int, transfers: int) -> str:
    if not batches:
        return "0"
    requests = "1 transfer" if transfers == 1 else f"{transfers} transfers"
    return f"{batches} ({requests}, {transfers / batches:.1f} per batch)"


def debug_view(d: Any) -> RenderableType:
    from p2engine.common.v1 import common_pb2

    caller = enum_label(common_pb2.CallerKind, d.caller.kind, "CALLER_KIND_").lower()
    return key_values(
        "Ledger debug",
        [
            ("backend", d.backend),
            ("endpoint", d.endpoint),
            ("connected", styled("yes", "green") if d.connected else styled("no", "red")),
            ("asset", f"{d.asset} (scale {d.scale})"),
            ("audit head", f"#{d.audit_head_sequence} {d.audit_head_hash[:16]}"),
            ("outbox pending", str(d.outbox_pending)),
            ("transfer batches", _batches_text(d.transfer_batches, d.batched_transfers)),
            ("you are", f"{caller}:{d.caller.id}" if d.caller.id else caller),
        ],
    )
