"""Merchant commands: pay, order show, refund create/show, tokens list/remove. Reads take --json.

Errors of the merchant API propagate to ``worker.cli.main``, which prints one line and exits with
the code of their kind. A payment or refund recorded UNKNOWN is printed like any result and exits
75 with a line naming the record, so a script never mistakes "being resolved" for "done".
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from worker.bootstrap import process_runtime
from worker.ops.render import render_order, render_refund
from worker.service import PaymentService, token_dict
from worker.service_errors import NotFound


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


#: ``pay X -1`` reaches the amount check ("must be positive") instead of "No such option '-1'"
NEGATIVE_AMOUNTS = {"ignore_unknown_options": True}


@click.command(context_settings=NEGATIVE_AMOUNTS)
@click.argument("out_trade_no")
@click.argument("amount")
@click.option("--currency", default="USD", show_default=True)
@click.option("--user", "user_id", required=True)
@click.option("--subject", default="Order", show_default=True)
@click.option("--return-url", default="https://example.com/return", show_default=True)
@click.option("--save-card", is_flag=True, help="Offer to save the card for later payments.")
@click.option("--token", type=int, help="Pay with a saved card (its local id from `tokens list`).")
@click.option("--country", default="US", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
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
    _exit_if_unknown(result.state, f"payment {result.out_trade_no}")


def _exit_if_unknown(state: str, record: str) -> None:
    if state == "UNKNOWN":
        click.echo(f"outcome_unknown: {record} is being resolved by query; read it later and never retry it "
                   "under a new number", err=True)
        raise click.exceptions.Exit(75)


@click.group()
def order() -> None:
    """Orders."""


@order.command("show")
@click.argument("out_trade_no")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
def order_show(out_trade_no: str, as_json: bool) -> None:
    """An order with its full history and its refunds."""
    view = _service().get_order(out_trade_no)
    if view is None:
        raise NotFound(f"no order {out_trade_no}", ref=out_trade_no)
    _emit(view.to_dict(), as_json, lambda: render_order(view, Console()))


@click.group()
def refund() -> None:
    """Refunds."""


@refund.command("create", context_settings=NEGATIVE_AMOUNTS)
@click.argument("out_trade_no")
@click.argument("amount")
@click.option("--out-refund-no", help="Your refund number (idempotency key); generated when omitted.")
@click.option("--comments")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
def refund_create(out_trade_no: str, amount: str, out_refund_no: str | None, comments: str | None,
                  as_json: bool) -> None:
    """Request a full or partial refund; refused locally above what is left."""
    view = _service().refund(out_trade_no, _decimal(amount), out_refund_no=out_refund_no, comments=comments)
    _emit(view.to_dict(), as_json, lambda: render_refund(view, Console()))
    _exit_if_unknown(view.refund.state, f"refund {view.refund.out_refund_no}")


@refund.command("show")
@click.argument("out_refund_no")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
def refund_show(out_refund_no: str, as_json: bool) -> None:
    """Show a refund: its state and history."""
    view = _service().get_refund(out_refund_no)
    if view is None:
        raise NotFound(f"no refund {out_refund_no}", ref=out_refund_no)
    _emit(view.to_dict(), as_json, lambda: render_refund(view, Console()))


@click.group()
def tokens() -> None:
    """Saved card tokens."""


def _user(option: str | None, positional: str | None) -> str:
    """``--user U`` as with ``pay``; the older positional USER is still accepted."""
    if option and positional and option != positional:
        raise click.UsageError(f"two users given: --user {option} and {positional}")
    if not (option or positional):
        raise click.UsageError("give the user with --user USER")
    return str(option or positional)


@tokens.command("list")
@click.argument("positional_user", metavar="[USER]", required=False)
@click.option("--user", "user_opt", help="The user whose cards to list (as with `pay --user`).")
@click.option("--no-sync", is_flag=True, help="Do not refresh statuses from Checus first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
def tokens_list(positional_user: str | None, user_opt: str | None, no_sync: bool, as_json: bool) -> None:
    """List a user's saved cards (synced with Checus first, unless --no-sync); ids for `pay --token`."""
    user_id = _user(user_opt, positional_user)
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
@click.argument("args", metavar="[USER] TOKEN", nargs=-1, required=True)
@click.option("--user", "user_opt", help="The card's user (as with `pay --user`).")
@click.option("--reason", help="Why, sent to Checus with the removal.")
def tokens_remove(args: tuple[str, ...], user_opt: str | None, reason: str | None) -> None:
    """Remove a saved card (TOKEN: its id from `tokens list`); marked Deleted only when Checus says so."""
    if len(args) > 2:
        raise click.UsageError("expected [USER] TOKEN")
    user_id = _user(user_opt, args[0] if len(args) == 2 else None)
    try:
        token = int(args[-1])
    except ValueError:
        raise click.BadParameter(f"{args[-1]!r} is not a token id (a number from `tokens list`)") from None
    removed = _service().remove_token(user_id, token, reason=reason)
    click.echo(f"token {removed.id} (…{removed.token_hint}): {removed.status}")
