"""The hosted cashier and 3DS challenge page: plain HTML forms, no JavaScript.

``GET /cashier/{tradeToken}`` shows the order and one submit button per outcome (ids
``pay-success``, ``pay-fail``, ``pay-pending``; for a 3DS challenge ``pass-3ds`` and
``fail-3ds``), plus a ``save-card`` checkbox, ticked by default, when the merchant offered
tokenisation. ``POST`` with ``action`` (success, fail, pending, 3ds_pass, 3ds_fail) and
``save_card`` completes the order as a payer would and shows a result page whose link goes
back to ``frontCallbackUrl`` with ``outTradeNo``, ``tradeToken`` and ``status`` appended, as
PayerMax's page return does. An unticked box is absent from a form post, so no
``save_card`` means the payer declined consent.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from worker.devtools.simulator import outcomes, views
from worker.devtools.simulator.outcomes import Completion
from worker.devtools.simulator.records import Order, OrderStatus
from worker.devtools.simulator.runtime import SimulatorRuntime

YES = frozenset({"true", "on", "1", "yes"})
PAY_BUTTONS = (
    ("pay-success", "success", "Pay"),
    ("pay-fail", "fail", "Fail"),
    ("pay-pending", "pending", "Leave pending"),
)
CHALLENGE_BUTTONS = (("pass-3ds", "3ds_pass", "Pass 3DS"), ("fail-3ds", "3ds_fail", "Fail 3DS"))
SAVE_CARD = (
    '<p><label><input type="checkbox" id="save-card" name="save_card" value="true" checked> '
    "Save this card for future payments</label></p>"
)


def _completion(action: str, consent: bool) -> Completion | None:
    """What a button does; ``pending`` leaves the order as it is (and sends nothing)."""
    return {
        "success": Completion(status=OrderStatus.SUCCESS, token_consent=consent),
        "fail": Completion(status=OrderStatus.FAILED),
        "3ds_pass": Completion(status=OrderStatus.SUCCESS, three_ds=True, token_consent=consent),
        "3ds_fail": Completion(
            status=OrderStatus.FAILED, code="AUTHENTICATE_FAILED", msg="3DS authentication failed.", three_ds=True
        ),
    }.get(action)


@cache
def _template(name: str) -> Template:
    text = resources.files("worker.devtools.simulator").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def _page(name: str, values: dict[str, str], status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_template(name).substitute(values), status_code=status_code)


def _common(order: Order) -> dict[str, str]:
    return {
        "out_trade_no": html.escape(order.out_trade_no),
        "trade_token": html.escape(order.trade_token),
        "amount": html.escape(str(views.money(order.amount, order.currency))),
        "currency": html.escape(order.currency),
        "status": html.escape(str(order.status)),
    }


def _buttons(order: Order) -> str:
    choices = CHALLENGE_BUTTONS if order.needs_3ds else PAY_BUTTONS
    return "\n".join(
        f'<button type="submit" id="{ident}" name="action" value="{value}">{label}</button>'
        for ident, value, label in choices
    )


def _cashier(order: Order) -> HTMLResponse:
    values = {
        **_common(order),
        "heading": "3DS challenge" if order.needs_3ds else "Checkout",
        "subject": html.escape(order.subject),
        "card": html.escape(order.card.masked if order.card else "any"),
        "save_card": SAVE_CARD if order.token_offered else "",
        "buttons": _buttons(order),
    }
    return _page("cashier.html", values)


def return_url(order: Order) -> str | None:
    if not order.front_callback_url:
        return None
    joiner = "&" if "?" in order.front_callback_url else "?"
    query = urlencode({"outTradeNo": order.out_trade_no, "tradeToken": order.trade_token, "status": str(order.status)})
    return f"{order.front_callback_url}{joiner}{query}"


def _result(order: Order, message: str, status_code: int = 200) -> HTMLResponse:
    target = return_url(order)
    link = f'<p><a id="return-link" href="{html.escape(target)}">Return to merchant</a></p>' if target else ""
    values = {
        **_common(order),
        "status_text": html.escape(str(order.status).lower()),
        "message": html.escape(message),
        "return_link": link,
    }
    return _page("result.html", values, status_code)


def _not_found() -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>Not found</title><h1>Unknown trade token</h1>", status_code=404)


async def cashier_get(request: Request) -> Response:
    rt: SimulatorRuntime = request.app.state.runtime
    order = rt.state.order_by_trade_token(request.path_params["trade_token"])
    if order is None:
        return _not_found()
    return _result(order, "This order is already complete.") if order.terminal else _cashier(order)


async def cashier_post(request: Request) -> Response:
    rt: SimulatorRuntime = request.app.state.runtime
    order = rt.state.order_by_trade_token(request.path_params["trade_token"])
    if order is None:
        return _not_found()
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    action = form.get("action", [""])[0]
    if action not in {"success", "fail", "pending", "3ds_pass", "3ds_fail"}:
        return HTMLResponse("<!doctype html><h1>Unknown action</h1>", status_code=400)
    if order.terminal:
        return _result(order, "This order is already complete.", status_code=409)
    completion = _completion(action, form.get("save_card", [""])[0].lower() in YES)
    if completion is not None:
        order = outcomes.complete(rt, order, completion)
    return _result(order, "The payment is still being processed." if completion is None else "Done.")


def routes() -> list[Route]:
    return [
        Route("/cashier/{trade_token}", cashier_get, methods=["GET"]),
        Route("/cashier/{trade_token}", cashier_post, methods=["POST"]),
    ]
