"""`p2engine ledger ...`: wallets, transfers, history, audit (LedgerService).

Calls are made as the operator "operator:<$USER or cli>". Amounts go to the server as the
decimal strings the user typed and come back as the server's strings: never a float.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2e_cli import inputs

if TYPE_CHECKING:
    from p2e_cli.rpc import Session

app = typer.Typer(no_args_is_help=True, help="Agent wallets: balances, transfers, audit.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _ledger(session: Session) -> Any:
    from p2engine.ledger.v1 import ledger_service_pb2_grpc

    return session.stub("ledger", ledger_service_pb2_grpc.LedgerServiceStub)


def _call(method: str, request: Any) -> Any:
    """One unary LedgerService call, failures as one line."""
    from p2e_cli import rpc

    async def body(session: Session) -> Any:
        return await getattr(_ledger(session), method)(request)

    return rpc.run(body)


def _pb() -> Any:
    from p2engine.ledger.v1 import ledger_service_pb2

    return ledger_service_pb2


@app.command()
def init(
    balance: Annotated[
        str | None, typer.Option(help="Starting balance, e.g. 100.0 (default: config).")
    ] = None,
    agent: Annotated[
        list[str] | None, typer.Option("--agent", help="Only these agents (repeatable).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a wallet for every configured agent; existing wallets are left as they are."""
    from p2e_cli import render, rpc

    amount = inputs.amount(balance, "balance", allow_zero=True) if balance is not None else ""
    reply = _call(
        "InitWallets",
        _pb().InitWalletsRequest(
            agent_ids=agent or [], initial_balance=amount, request_id=rpc.new_request_id()
        ),
    )
    if json_out:
        render.print_json(reply)
        return
    created = set(reply.created_agent_ids)
    render.show(render.wallets_table(reply.wallets, "Wallets"))
    if created:
        render.out(f"Created {len(created)} wallet(s): {', '.join(sorted(created))}.")
    else:
        render.out("Every wallet already existed; nothing changed.")


@app.command()
def balance(
    agent: Annotated[str | None, typer.Argument(help="Agent id; all wallets if omitted.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one agent's balance, or every wallet."""
    from p2e_cli import render

    if agent is None:
        overview(json_out=json_out)
        return
    wallet = _call("GetBalance", _pb().GetBalanceRequest(agent_id=agent))
    if json_out:
        render.print_json(wallet)
        return
    frozen = " [red](frozen)[/red]" if wallet.frozen else ""
    render.out(
        f"{render.escape(wallet.agent_id)}: [bold]{render.escape(render.money(wallet.balance))}"
        f"[/bold]{frozen}"
    )


# A negative amount ("-5") is an argument to check, not an unknown option.
@app.command(context_settings={"ignore_unknown_options": True})
def transfer(
    from_agent: Annotated[str, typer.Argument(metavar="FROM", help="Payer agent id.")],
    to_agent: Annotated[str, typer.Argument(metavar="TO", help="Payee agent id.")],
    amount: Annotated[str, typer.Argument(help="Decimal amount, e.g. 25 or 25.50.")],
    reason: Annotated[str, typer.Option(help="Why (kept in history and audit).")] = "",
    request_id: Annotated[
        str | None, typer.Option(help="Idempotency key (generated when omitted).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Move money from one wallet to another, as the operator."""
    from p2e_cli import render, rpc

    value = inputs.amount(amount, "amount")
    rid = request_id or rpc.new_request_id()
    result = _call(
        "CreateTransfer",
        _pb().CreateTransferRequest(
            from_agent=from_agent, to_agent=to_agent, amount=value, reason=reason, request_id=rid
        ),
    )
    if json_out:
        render.print_json(result)
    else:
        render.show(render.transfer_view(result))
    status = render.transfer_status(result)
    if status == "PENDING_APPROVAL" and not json_out:
        render.out(f"Waiting for approval: `p2engine ledger approve {result.id}`.")
    if status in ("FAILED", "REJECTED"):
        rpc.fail(f"transfer {status.lower()}: {result.failure_reason or 'see the ledger audit'}")


@app.command()
def history(
    agent: Annotated[str, typer.Argument(help="Agent id.")],
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """An agent's transfers, sent and received, newest first."""
    from p2e_cli import render

    reply = _call(
        "ListTransactions", _pb().ListTransactionsRequest(agent_id=agent, page_size=limit)
    )
    if json_out:
        render.print_json(reply)
        return
    if not reply.transfers:
        render.out(f"{render.escape(agent)} has no transactions yet.")
        return
    render.show(render.transfers_table(agent, reply.transfers))


@app.command()
def audit(
    since: Annotated[
        str | None, typer.Option(help="Only events since: ISO time or 30m / 2h / 7d ago.")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only this event type, e.g. transfer_settled.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    verify: Annotated[bool, typer.Option("--verify", help="Also verify the hash chain.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """The ledger's hash-chained audit trail, newest first."""
    from p2e_cli import render, rpc

    pb = _pb()
    request = pb.ListAuditEventsRequest(page_size=limit, event_type=event_type or "")
    if since:
        request.since.FromDatetime(inputs.since(since))

    async def body(session: Session) -> tuple[Any, Any]:
        ledger = _ledger(session)
        events = await ledger.ListAuditEvents(request)
        check = await ledger.VerifyAudit(pb.VerifyAuditRequest()) if verify else None
        return events, check

    events, check = rpc.run(body)
    if json_out:
        doc = render.as_dict(events)
        if check is not None:
            doc["verification"] = render.as_dict(check)
        render.print_json(doc)
    elif events.events:
        render.show(render.audit_table(events.events))
    else:
        render.out("No audit events match.")
    if check is None:
        return
    if not check.valid:
        rpc.fail(
            f"audit chain broken at sequence {check.first_bad_sequence}: {check.problem} "
            f"({check.checked} entries checked)"
        )
    if not json_out:
        render.out(f"[green]Audit chain valid[/green]: {check.checked} entries checked.")


@app.command()
def metrics(json_out: JsonOpt = False) -> None:
    """Supply, volume and counts of the whole ledger."""
    from p2e_cli import render

    reply = _call("GetMetrics", _pb().GetMetricsRequest())
    render.print_json(reply) if json_out else render.show(render.metrics_view(reply))


@app.command()
def overview(json_out: JsonOpt = False) -> None:
    """Every wallet with its balance and activity."""
    from p2e_cli import render

    reply = _call("GetOverview", _pb().GetOverviewRequest())
    if json_out:
        render.print_json(reply)
    elif not reply.wallets:
        render.out("No wallets yet: create them with `p2engine ledger init`.")
    else:
        render.show(render.wallets_table(reply.wallets, "Wallets"))


@app.command()
def debug(json_out: JsonOpt = False) -> None:
    """Backend, connectivity and the head of the audit chain."""
    from p2e_cli import render

    reply = _call("GetDebugInfo", _pb().GetDebugInfoRequest())
    render.print_json(reply) if json_out else render.show(render.debug_view(reply))


@app.command()
def approve(
    transfer_id: Annotated[str, typer.Argument(metavar="ID", help="The pending transfer's id.")],
    json_out: JsonOpt = False,
) -> None:
    """Settle a transfer waiting for approval."""
    from p2e_cli import rpc

    request = _pb().ApproveTransferRequest(transfer_id=transfer_id, request_id=rpc.new_request_id())
    _show_transfer(_call("ApproveTransfer", request), json_out)


@app.command()
def reject(
    transfer_id: Annotated[str, typer.Argument(metavar="ID", help="The pending transfer's id.")],
    reason: Annotated[str, typer.Option(help="Why it is rejected.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Reject a transfer waiting for approval; nothing moves."""
    from p2e_cli import rpc

    request = _pb().RejectTransferRequest(
        transfer_id=transfer_id, reason=reason, request_id=rpc.new_request_id()
    )
    _show_transfer(_call("RejectTransfer", request), json_out)


@app.command()
def freeze(
    agent: Annotated[str, typer.Argument(help="Agent id.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Freeze a wallet: every debit fails until it is unfrozen."""
    from p2e_cli import rpc

    request = _pb().FreezeWalletRequest(
        agent_id=agent, reason=reason, request_id=rpc.new_request_id()
    )
    _show_wallet(_call("FreezeWallet", request), json_out)


@app.command()
def unfreeze(
    agent: Annotated[str, typer.Argument(help="Agent id.")],
    json_out: JsonOpt = False,
) -> None:
    """Lift a wallet's freeze."""
    from p2e_cli import rpc

    request = _pb().UnfreezeWalletRequest(agent_id=agent, request_id=rpc.new_request_id())
    _show_wallet(_call("UnfreezeWallet", request), json_out)


def _show_transfer(result: Any, json_out: bool) -> None:
    from p2e_cli import render

    render.print_json(result) if json_out else render.show(render.transfer_view(result))


def _show_wallet(wallet: Any, json_out: bool) -> None:
    from p2e_cli import render

    if json_out:
        render.print_json(wallet)
        return
    state = "[red]frozen[/red]" if wallet.frozen else "[green]active[/green]"
    render.out(
        f"{render.escape(wallet.agent_id)} is {state}; balance "
        f"{render.escape(render.money(wallet.balance))}"
    )
