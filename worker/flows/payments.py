"""Creating payments: store and claim, send, record what the answer means.

The order row is stored together with the claim of its first send (CREATED → UNKNOWN, one
transaction), and only then is /orderAndPay called. So a number is sent by one caller only
(a second caller finds the row and gets the existing record), and a crash at any instant after
the claim leaves an UNKNOWN order that the scheduler's query resolves: adopt what Checus says,
or send again with the same outTradeNo if Checus never heard of it. Everything that can refuse
the call (input, settings, the saved card) is checked before the transaction, so a refusal
means nothing was stored and nothing will be sent.

The answer is recorded under compare-and-set alone (no lock to be busy): accepted → PENDING
(a synchronous SUCCESS is a hint, confirmed by a query or the notification); a refusal of a
send known to be the first → FAILED; anything else stays UNKNOWN and is resolved by query.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import simplejson
import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from statemachine import (
    OrderState,
    SendAnswer,
    SubmitAccepted,
    SubmitClaimed,
    SubmitDuplicate,
    SubmitRejected,
    SubmitUnknown,
)
from worker.flows.notifications import rematch
from worker.flows.transition import (
    Applied,
    change_order,
    claim_updates,
    committed,
    decide_order,
    ledger_updates,
    write_decision,
)
from worker.gateway import ChecusClient, DuplicateRequest, GatewayRejected, OutcomeUnknown
from worker.gateway.money import to_minor
from worker.gateway.replies import OrderCreated
from worker.gateway.requests import HostedCardPayment, TokenPayment
from worker.runtime import Runtime
from worker.runtime.crashpoints import crash_point
from worker.store import repo
from worker.store.apply import Stale
from worker.store.db import read, write
from worker.store.records import OrderRecord

log = structlog.get_logger("worker.flows.payments")
PaymentRequest = HostedCardPayment | TokenPayment


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """One send and what became of it: ``applied`` is None when the answer could not be recorded."""

    event: SendAnswer
    reply: OrderCreated | None
    applied: Applied | None


def stored_request(request: PaymentRequest) -> str:
    """The exact request data kept with the order (without the token id), for resends and comparisons."""
    data = request.to_data()
    data.get("paymentDetail", {}).pop("paymentTokenID", None)  # the token lives in payment_tokens only
    return simplejson.dumps(data, use_decimal=True, separators=(",", ":"))


def order_values(rt: Runtime, request: PaymentRequest, token_ref: int | None) -> dict[str, Any]:
    """The row of a new order (CREATED, version 1): what ``open_order`` inserts before it claims the send."""
    now = rt.clock()
    return {
        "out_trade_no": request.out_trade_no, "kind": "token" if token_ref else "hosted", "state": "CREATED",
        "amount_minor": to_minor(request.amount, request.currency), "currency": request.currency,
        "country": request.country, "user_id": request.user_id, "subject": request.subject,
        "tokenize": bool(getattr(request, "token_for_future_use", False)), "token_ref": token_ref,
        "app_id": rt.settings.app_id, "merchant_no": rt.settings.merchant_no, "request_json": stored_request(request),
        "created_at": now, "updated_at": now, "last_submit_at": now,
        "expire_at": now + timedelta(seconds=request.expire_seconds or 1800),
    }


def open_order(rt: Runtime, request: PaymentRequest, *, token_ref: int | None) -> tuple[OrderRecord, bool]:
    """Store the order and claim its first send in one transaction: (the claimed order, True); or
    (the existing order, False) when the outTradeNo is taken, whether by this request or another."""
    values = order_values(rt, request, token_ref)
    try:
        with write(rt.engine) as conn:
            existing = repo.find_order(conn, request.out_trade_no)
            if existing is not None:
                return existing, False
            order = repo.get_order(conn, repo.insert_order(conn, values))
            assert order is not None
            prepared = decide_order(rt, order, SubmitClaimed())
            write_decision(rt, conn, prepared, source="api", evidence={"api": "orderAndPay", "send": "claimed"},
                           updates=claim_updates(rt))
    except IntegrityError:  # a concurrent caller inserted the same number first
        with read(rt.engine) as conn:
            existing = repo.find_order(conn, request.out_trade_no)
        if existing is None:
            raise
        return existing, False
    committed(rt, prepared, order.id, "api")
    return order, True


def send(rt: Runtime, client: ChecusClient, order_id: int, send_no: int, request: PaymentRequest) -> Sent:
    """Call /orderAndPay for a claimed send and record the answer (compare-and-set only, no lock)."""
    crash_point("after_claim")
    reply: OrderCreated | None = None
    event: SendAnswer
    try:
        reply = client.create_payment(request)
        event = SubmitAccepted(status_hint="SUCCESS" if reply.status.value == "SUCCESS" else "PENDING")
    except DuplicateRequest:
        event = SubmitDuplicate()
    except GatewayRejected as exc:
        event = SubmitRejected(code=exc.code, send_no=send_no)
    except OutcomeUnknown:
        event = SubmitUnknown()
    except Exception as exc:  # noqa: BLE001 - whatever broke after the request left, its outcome is unknown
        log.error("order.send_failed", order_id=order_id, error=type(exc).__name__)
        event = SubmitUnknown()
    crash_point("after_gateway_call")
    extra: dict[str, Any] = {}
    if reply is not None:
        extra = {"trade_token": reply.trade_token, "redirect_url": reply.redirect_url,
                 "submit_hint": reply.status.value}
    evidence = {"api": "orderAndPay", "answer": type(event).__name__, "send": send_no,
                "hint": reply.status.value if reply else None, "code": getattr(event, "code", None)}
    try:
        applied = change_order(rt, order_id, lambda _o: event, source="api", evidence=evidence,
                               updates=ledger_updates(rt, send_no, event.answer, extra))
    except (Stale, SQLAlchemyError) as exc:  # the claim stays UNKNOWN: the scheduler's query resolves it
        log.error("order.answer_unrecorded", order_id=order_id, error=type(exc).__name__)
        applied = None
    return Sent(event=event, reply=reply, applied=applied)


def after_open(rt: Runtime, out_trade_no: str) -> None:
    """Notifications that arrived before the order existed are applied now (the sweeper would, later)."""
    with contextlib.suppress(RedisError, SQLAlchemyError):
        rematch(rt, "payment", out_trade_no)


def resubmit_order(rt: Runtime, order_id: int) -> str:
    """Send a CREATED order's stored request again, with the same outTradeNo (Checus never heard of it)."""
    client = rt.client  # a worker that cannot sign claims nothing
    with read(rt.engine) as conn:
        order = repo.get_order(conn, order_id)
        token = repo.get_token(conn, order.token_ref) if order and order.token_ref else None
    if order is None or order.state != OrderState.CREATED:
        return "not_created"
    request = rebuild_request(order.request_json, token.token_id if token else None)
    claim = change_order(rt, order.id, lambda _o: SubmitClaimed(), source="api",
                         evidence={"api": "orderAndPay", "send": "claimed"}, updates=claim_updates(rt))
    if claim is None or claim.decision.to_state is not OrderState.UNKNOWN:
        return "not_claimed"
    sent = send(rt, client, order.id, claim.record.ledger.sends + 1, request)
    return str(sent.applied.decision.outcome) if sent.applied else "unrecorded"


def rebuild_request(stored: str, token_id: str | None) -> PaymentRequest:
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
