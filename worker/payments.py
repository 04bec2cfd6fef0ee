"""Creating payments: store first, then call /orderAndPay, then record what the answer means.

The order row exists (CREATED, with the exact request it will send) before the gateway is
called, so a crash at any point leaves something the scheduler can resolve: a CREATED order
whose call was lost is treated as an unknown outcome and settled by /orderQuery. The answer
to /orderAndPay moves the order to PENDING (or FAILED on a rejection, UNKNOWN when the
outcome is unknown); a synchronous SUCCESS is reported to the caller as a hint and confirmed
by a query or the notification before the order becomes SUCCESS.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import simplejson

from statemachine import OrderEvent, SubmitAccepted, SubmitDuplicate, SubmitRejected, SubmitUnknown

from .bootstrap import Runtime
from .crashpoints import crash_point
from .gateway import DuplicateRequest, GatewayRejected, OutcomeUnknown
from .gateway.money import to_minor
from .gateway.replies import OrderCreated
from .gateway.requests import HostedCardPayment, TokenPayment
from .notifications import rematch
from .store import repo
from .store.db import read, write
from .transition import Applied, change_order


class PaymentRefused(ValueError):
    """The payment was refused before any gateway call (e.g. the token is not usable)."""


def _stored_request(request: HostedCardPayment | TokenPayment) -> str:
    data = request.to_data()
    data.get("paymentDetail", {}).pop("paymentTokenID", None)  # the token lives in payment_tokens only
    return simplejson.dumps(data, use_decimal=True, separators=(",", ":"))


def store_order(rt: Runtime, request: HostedCardPayment | TokenPayment, *, token_ref: int | None) -> int:
    now = rt.clock()
    values: dict[str, Any] = {
        "out_trade_no": request.out_trade_no, "kind": "token" if token_ref else "hosted", "state": "CREATED",
        "amount_minor": to_minor(request.amount, request.currency), "currency": request.currency,
        "country": request.country, "user_id": request.user_id, "subject": request.subject,
        "tokenize": bool(getattr(request, "token_for_future_use", False)), "token_ref": token_ref,
        "app_id": rt.settings.app_id, "merchant_no": rt.settings.merchant_no, "request_json": _stored_request(request),
        "created_at": now, "updated_at": now, "last_submit_at": now,
        "expire_at": now + timedelta(seconds=request.expire_seconds or 1800),
        "next_poll_at": now + timedelta(seconds=rt.timers.stale_created_after),
    }
    with write(rt.engine) as conn:
        order_id = repo.insert_order(conn, values)
    rematch(rt, "payment", request.out_trade_no)
    return order_id


def submit(rt: Runtime, order_id: int, request: HostedCardPayment | TokenPayment) -> tuple[Applied | None,
                                                                                          OrderCreated | None]:
    """Call /orderAndPay and record the answer. Returns the decision and the gateway's reply."""
    reply: OrderCreated | None = None
    event: OrderEvent
    try:
        reply = rt.client.create_payment(request)
        crash_point("after_gateway_call")
        event = SubmitAccepted(status_hint="SUCCESS" if reply.status.value == "SUCCESS" else "PENDING")
    except DuplicateRequest:
        event = SubmitDuplicate()
    except GatewayRejected as exc:
        event = SubmitRejected(code=exc.code)
    except OutcomeUnknown:
        event = SubmitUnknown()
    updates: dict[str, Any] = {"last_submit_at": rt.clock()}
    if reply is not None:
        updates.update(trade_token=reply.trade_token, redirect_url=reply.redirect_url, submit_hint=reply.status.value)
    evidence = {"api": "orderAndPay", "answer": type(event).__name__, "hint": reply.status.value if reply else None}
    applied = change_order(rt, order_id, lambda _o: event, source="api", evidence=evidence, updates=updates)
    return applied, reply


def resubmit_order(rt: Runtime, order_id: int) -> str:
    """Send a CREATED order's stored request again, with the same outTradeNo (after ORDER_NOT_EXIST)."""
    with read(rt.engine) as conn:
        order = repo.get_order(conn, order_id)
        token = repo.get_token(conn, order.token_ref) if order and order.token_ref else None
    if order is None or order.state != "CREATED":
        return "not_created"
    request = rebuild_request(order.request_json, token.token_id if token else None)
    applied, _reply = submit(rt, order.id, request)
    return str(applied.decision.outcome) if applied else "missing"


def rebuild_request(stored: str, token_id: str | None) -> HostedCardPayment | TokenPayment:
    from decimal import Decimal

    data = simplejson.loads(stored, use_decimal=True)
    detail = data.get("paymentDetail", {})
    common: dict[str, Any] = {
        "out_trade_no": data["outTradeNo"], "subject": data["subject"], "amount": Decimal(data["totalAmount"]),
        "currency": data["currency"], "user_id": data["userId"], "notify_url": data.get("notifyUrl"),
        "expire_seconds": int(data["expireTime"]) if data.get("expireTime") else None,
        "reference": data.get("reference"),
    }
    if data["integrate"] == "Direct_Payment":
        buyer = detail.get("buyerInfo", {})
        return TokenPayment(**common, country=data["country"], payment_token_id=token_id or "",
                            client_ip=buyer.get("clientIp", ""), user_agent=buyer.get("userAgent", ""),
                            terminal_type=data.get("terminalType", "WEB"),
                            front_callback_url=data.get("frontCallbackUrl"),
                            merchant_initiated=bool(detail.get("merchantInitiated")))
    return HostedCardPayment(**common, country=data.get("country"), front_callback_url=data["frontCallbackUrl"],
                             allowed_card_orgs=tuple(detail.get("allowedCardOrg", ())),
                             token_for_future_use=bool(detail.get("tokenForFutureUse")), language=data.get("language"))
