"""Merchant commands: pay, order show, refund create/show, tokens list/remove. Reads take --json."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..bootstrap import process_runtime
from ..service import OrderView, PaymentService, RefundView, token_dict
from ..store.records import TransitionRecord


def _service() -> PaymentService:
    return PaymentService(process_runtime())


def _decimal(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount") from None


def _emit(data: Any, as_json: bool, render: Any) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render()


def history_table(title: str, history: list[TransitionRecord]) -> Table:
    table = Table(title=title)
    for column in ("v", "at", "from", "to", "trigger", "source"):
        table.add_column(column)
    for h in history:
        table.add_row(str(h.version), h.at.strftime("%H:%M:%S.%f")[:-3], h.from_state or "", h.to_state, h.trigger,
                      h.source)
    return table


@click.command()
@click.argument("out_trade_no")
@click.argument("amount")
@click.option("--currency", default="USD", show_default=True)
@click.option("--user", "user_id", required=True)
@click.option("--subject", default="Order", show_default=True)
@click.option("--return-url", default="https://example.com/return", show_default=True)
@click.option("--save-card", is_flag=True, help="Offer to save the card for later payments.")
@click.option("--token", type=int, help="Pay with a saved card (its local id from `tokens list`).")
@click.option("--country", default="US", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def pay(out_trade_no: str, amount: str, currency: str, user_id: str, subject: str, return_url: str,
        save_card: bool, token: int | None, country: str, as_json: bool) -> None:
    """Create a card payment (hosted checkout), or a token payment with --token."""
    service = _service()
    if token is not None:
        result = service.pay_with_token(out_trade_no=out_trade_no, user_id=user_id, token=token,
                                        amount=_decimal(amount), currency=currency, country=country, subject=subject,
                                        client_ip="127.0.0.1", user_agent="checus-worker-cli")
    else:
        result = service.create_card_payment(out_trade_no=out_trade_no, amount=_decimal(amount), currency=currency,
                                             user_id=user_id, subject=subject, front_callback_url=return_url,
                                             save_card=save_card, country=country)
    _emit(result.to_dict(), as_json, lambda: click.echo(
        f"{result.out_trade_no}: {result.state}" + (f"\nredirect the buyer to {result.redirect_url}"
                                                      if result.redirect_url else "")))


def render_order(view: OrderView, console: Console) -> None:
    o = view.order
    console.print(f"[bold]{o.out_trade_no}[/bold] {o.state} {o.amount} {o.currency} user={o.user_id} "
                  f"refunded={view.refunded}")
    console.print(history_table(f"order {o.out_trade_no}", view.history))
    for refund in view.refunds:
        render_refund(refund, console)


def render_refund(view: RefundView, console: Console) -> None:
    r = view.refund
    console.print(history_table(f"refund {r.out_refund_no} {r.amount} {r.currency}: {r.state}", view.history))


@click.group()
def order() -> None:
    """Orders."""


@order.command("show")
@click.argument("out_trade_no")
@click.option("--json", "as_json", is_flag=True)
def order_show(out_trade_no: str, as_json: bool) -> None:
    """An order with its full history and its refunds."""
    view = _service().get_order(out_trade_no)
    if view is None:
        raise click.ClickException(f"no order {out_trade_no}")
    _emit(view.to_dict(), as_json, lambda: render_order(view, Console()))


@click.group()
def refund() -> None:
    """Refunds."""


@refund.command("create")
@click.argument("out_trade_no")
@click.argument("amount")
@click.option("--out-refund-no", help="Your refund number (idempotency key); generated when omitted.")
@click.option("--comments")
@click.option("--json", "as_json", is_flag=True)
def refund_create(out_trade_no: str, amount: str, out_refund_no: str | None, comments: str | None,
                  as_json: bool) -> None:
    """Request a full or partial refund; refused locally above what is left."""
    from ..store.repo import RefundRefused

    try:
        view = _service().refund(out_trade_no, _decimal(amount), out_refund_no=out_refund_no, comments=comments)
    except RefundRefused as exc:
        raise click.ClickException(f"refund refused: {exc}") from None
    _emit(view.to_dict(), as_json, lambda: render_refund(view, Console()))


@refund.command("show")
@click.argument("out_refund_no")
@click.option("--json", "as_json", is_flag=True)
def refund_show(out_refund_no: str, as_json: bool) -> None:
    view = _service().get_refund(out_refund_no)
    if view is None:
        raise click.ClickException(f"no refund {out_refund_no}")
    _emit(view.to_dict(), as_json, lambda: render_refund(view, Console()))


@click.group()
def tokens() -> None:
    """Saved card tokens."""


@tokens.command("list")
@click.argument("user_id")
@click.option("--no-sync", is_flag=True, help="Do not refresh statuses from Checus first.")
@click.option("--json", "as_json", is_flag=True)
def tokens_list(user_id: str, no_sync: bool, as_json: bool) -> None:
    found = _service().list_tokens(user_id, sync=not no_sync)
    data = [token_dict(t) for t in found]

    def render() -> None:
        table = Table(title=f"tokens of {user_id}")
        for column in ("id", "token", "status", "card", "org"):
            table.add_column(column)
        for t in found:
            table.add_row(str(t.id), f"…{t.token_hint}", t.status, t.masked_card or "", t.card_org or "")
        Console().print(table)

    _emit(data, as_json, render)


@tokens.command("remove")
@click.argument("user_id")
@click.argument("token", type=int)
@click.option("--reason")
def tokens_remove(user_id: str, token: int, reason: str | None) -> None:
    """Remove a saved card at Checus; it is marked Deleted only when Checus says so."""
    from ..tokens import TokenRefused

    try:
        removed = _service().remove_token(user_id, token, reason=reason)
    except TokenRefused as exc:
        raise click.ClickException(f"token refused: {exc.reason}") from None
    click.echo(f"token {removed.id} (…{removed.token_hint}): {removed.status}")
