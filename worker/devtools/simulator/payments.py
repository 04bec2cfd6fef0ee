"""``/orderAndPay`` and ``/orderQuery``: create a payment, and tell its truth.

Validation follows WIRE.md §26 and the OpenAPI schema (``language`` ≤ 16 characters,
``expireTime`` a string, ``terminalType`` required for Direct_Payment), failing on the first
problem with the field named in ``msg``; ``tokenForFutureUse`` may be ``true`` or ``"true"``
(§26: the Checus pages quote the string, the schema a boolean).

``outTradeNo`` is unique case-insensitively. By default (``repeat_answer`` ``replay``) a
duplicate answers ``ORDER_REPEAT`` with the existing order's ``{outTradeNo, tradeToken,
status}`` (or, with ``idempotent_order_replay``, an identical ``data`` object gets the original
answer again); the fault plan can ask for the other readings (``repeats.py``).
Token payments are refused with ``token_reject_code`` when the token is unknown, someone
else's, Deleted or Expired.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import simplejson
import structlog

from worker.devtools.simulator import fields, outcomes, repeats, views
from worker.devtools.simulator.envelope import Rejected, Reply, ok
from worker.devtools.simulator.outcomes import Completion, Plan
from worker.devtools.simulator.records import DIRECT, HOSTED, Card, Order, OrderStatus, Token, TokenStatus
from worker.devtools.simulator.repeats import Call
from worker.devtools.simulator.runtime import SimulatorRuntime

log = structlog.get_logger("worker.devtools.simulator")
OUT_TRADE_NO = re.compile(r"[A-Za-z0-9_]{1,64}")
COUNTRY = re.compile(r"[A-Z]{2}")
BUYER = "paymentDetail.buyerInfo."


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    out_trade_no: str
    integrate: str
    subject: str
    amount: Decimal
    currency: str
    country: str | None
    user_id: str
    reference: str | None
    notify_url: str | None
    front_callback_url: str | None
    method: str | None
    target_org: str | None
    token_offered: bool
    token_id: str | None
    card: Card | None
    do_3ds: bool
    expire_seconds: int
    fingerprint: str


def read_order(data: dict[str, Any], rt: SimulatorRuntime) -> OrderRequest:
    out_trade_no = fields.matching(data, "outTradeNo", OUT_TRADE_NO)
    integrate = fields.one_of(data, "integrate", (HOSTED, DIRECT))
    subject = fields.text(data, "subject", max_len=256)
    currency = fields.currency(data, "currency")
    amount = fields.amount(data, "totalAmount", currency)
    user_id = fields.text(data, "userId", max_len=64)
    direct = integrate == DIRECT
    front = fields.optional_text(data, "frontCallbackUrl", max_len=1024)
    if not direct and front is None:
        raise Rejected("PARAMS_INVALID", "frontCallbackUrl is required")
    if direct:  # WEB, WAP or APP in the Direct_Payment schema, which bounds it at 3 characters
        fields.text(data, "terminalType", max_len=3)
    fields.optional_text(data, "language", max_len=16)
    default_expiry = rt.config.direct_expire_seconds if direct else rt.config.hosted_expire_seconds
    return OrderRequest(
        out_trade_no=out_trade_no,
        integrate=integrate,
        subject=subject,
        amount=amount,
        currency=currency,
        country=_country(data, required=direct),
        user_id=user_id,
        reference=fields.optional_text(data, "reference", max_len=512),
        notify_url=fields.url(data, "notifyUrl"),
        front_callback_url=front,
        expire_seconds=fields.expire_seconds(data, default_expiry),
        fingerprint=_fingerprint(data),
        **_detail(data, direct=direct, rt=rt),
    )


def _country(data: dict[str, Any], *, required: bool) -> str | None:
    value = fields.text(data, "country", max_len=2) if required else fields.optional_text(data, "country")
    if value is not None and not COUNTRY.fullmatch(value):
        raise Rejected("PARAMS_INVALID", "country is invalid")
    return value


def _fingerprint(data: dict[str, Any]) -> str:
    canonical = simplejson.dumps(data, sort_keys=True, use_decimal=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _detail(data: dict[str, Any], *, direct: bool, rt: SimulatorRuntime) -> dict[str, Any]:
    """The ``paymentDetail`` part of an ``OrderRequest``."""
    detail = fields.nested(data, "paymentDetail")
    where = "paymentDetail."
    method = fields.optional_text(detail, "paymentMethodType", max_len=16, where=where)
    if direct and method is None:
        raise Rejected("PARAMS_INVALID", "paymentDetail.paymentMethodType is required")
    token_id = fields.optional_text(detail, "paymentTokenID", max_len=64, where=where)
    if token_id is not None:
        _check_token_request(detail, direct=direct, hosted_allowed=rt.config.token_hosted_checkout)
    card_info = fields.nested(detail, "cardInfo", where=where)
    return {
        "method": method.upper() if method else None,
        "target_org": fields.optional_text(detail, "targetOrg", max_len=32, where=where),
        "token_offered": fields.flag(detail.get("tokenForFutureUse")),
        "token_id": token_id,
        "card": _card(card_info, _allowed_orgs(detail)) if (method or "CARD").upper() == "CARD" else None,
        "do_3ds": card_info.get("dynamic3DS") == "do3DS",
    }


def _check_token_request(detail: dict[str, Any], *, direct: bool, hosted_allowed: bool) -> None:
    if not direct and not hosted_allowed:
        raise Rejected("PARAMS_INVALID", "paymentTokenID requires integrate Direct_Payment")
    buyer = fields.nested(detail, "buyerInfo", where="paymentDetail.")
    fields.text(buyer, "clientIp", max_len=64, where=BUYER)
    fields.text(buyer, "userAgent", max_len=1024, where=BUYER)


def _allowed_orgs(detail: dict[str, Any]) -> tuple[str, ...]:
    value = detail.get("allowedCardOrg")
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _card(card_info: dict[str, Any], allowed: tuple[str, ...]) -> Card:
    pan = card_info.get("cardIdentifierNo")
    if not isinstance(pan, str) or not pan.strip():
        return outcomes.payer_card(allowed)
    holder = card_info.get("cardHolderFullName")
    month, year = card_info.get("cardExpirationMonth"), card_info.get("cardExpirationYear")
    return outcomes.card_from_pan(
        pan,
        holder=holder if isinstance(holder, str) and len(holder) > 2 else "James Smith",
        month=month if isinstance(month, str) and month.isdigit() else "12",
        year=year if isinstance(year, str) and year.isdigit() else "30",
    )


def order_and_pay(rt: SimulatorRuntime, data: dict[str, Any], call: Call) -> Reply:
    req = read_order(data, rt)
    existing = rt.state.order(req.out_trade_no)
    if existing is not None:
        return repeats.answer(
            call.repeat,
            endpoint="orderAndPay",
            key=existing.out_trade_no,
            msg="Duplicate order",
            data=_summary(existing),
            replay=lambda: _repeat(rt, existing, req),
            count=rt.state.count_code,
        )
    token = _usable_token(rt, req) if req.token_id is not None else None
    plan = outcomes.initial_plan(
        direct=req.integrate == DIRECT,
        method=req.method,
        token=token is not None,
        subject=req.subject,
        amount=req.amount,
        amount_triggers=rt.config.amount_triggers,
        do_3ds=req.do_3ds,
    )
    order = _create(rt, req, token, needs_3ds=plan is Plan.CHALLENGE)
    order = _resolve(rt, order, plan)
    answer: dict[str, Any] = {
        "outTradeNo": order.out_trade_no,
        "tradeToken": order.trade_token,
        "status": str(order.status),
    }
    if plan in (Plan.CASHIER, Plan.CHALLENGE):
        answer["redirectUrl"] = f"{rt.config.public_base_url or call.base_url}/cashier/{order.trade_token}"
    rt.state.put_order(replace(rt.state.order(order.out_trade_no) or order, first_reply=answer))
    return ok(answer)


def _repeat(rt: SimulatorRuntime, existing: Order, req: OrderRequest) -> Reply:
    """The ``replay`` answer: the first reply again for an identical body when configured, else
    ``ORDER_REPEAT`` with the existing order's summary (WIRE.md §26)."""
    if rt.config.idempotent_order_replay and existing.fingerprint == req.fingerprint and existing.first_reply:
        log.info("sim.order.replayed", out_trade_no=existing.out_trade_no)
        return ok(existing.first_reply)
    raise Rejected("ORDER_REPEAT", "Duplicate order", _summary(existing))


def _summary(order: Order) -> dict[str, Any]:
    return {"outTradeNo": order.out_trade_no, "tradeToken": order.trade_token, "status": str(order.status)}


def _usable_token(rt: SimulatorRuntime, req: OrderRequest) -> Token:
    token = rt.state.token(req.token_id or "")
    if token is None or token.user_id != req.user_id or token.status_at(rt.clock.now()) is not TokenStatus.ACTIVATED:
        raise Rejected(rt.config.token_reject_code, "paymentTokenID is invalid")
    return token


def _create(rt: SimulatorRuntime, req: OrderRequest, token: Token | None, *, needs_3ds: bool) -> Order:
    now = rt.clock.now()
    order = Order(
        out_trade_no=req.out_trade_no,
        trade_token=rt.ids.trade_token(now),
        trade_order_no=rt.ids.trade_no(now),
        integrate=req.integrate,
        subject=req.subject,
        amount=req.amount,
        currency=req.currency,
        country=req.country,
        user_id=req.user_id,
        reference=req.reference,
        notify_url=req.notify_url,
        front_callback_url=req.front_callback_url,
        payment_method_type="CARD" if token else req.method,
        target_org=req.target_org,
        token_offered=req.token_offered and token is None,
        token_used=token.token_id if token else None,
        card=token.card if token else req.card,
        needs_3ds=needs_3ds,
        created_at=now,
        expire_at=now + timedelta(seconds=req.expire_seconds),
        fingerprint=req.fingerprint,
    )
    rt.state.put_order(order)
    rt.state.count_order_created(order.out_trade_no)
    rt.scheduler.at(order.expire_at, lambda: outcomes.expire(rt, order.out_trade_no))
    log.info(
        "sim.order.created",
        out_trade_no=order.out_trade_no,
        integrate=order.integrate,
        amount=str(order.amount),
        currency=order.currency,
        token_payment=token is not None,
    )
    return order


def _resolve(rt: SimulatorRuntime, order: Order, plan: Plan) -> Order:
    if plan is Plan.SUCCESS:
        return outcomes.complete(rt, order, Completion(status=OrderStatus.SUCCESS))
    if plan is Plan.FAILED:
        return outcomes.complete(rt, order, Completion(status=OrderStatus.FAILED))
    return order


def order_query(rt: SimulatorRuntime, data: dict[str, Any], call: Call) -> Reply:
    out_trade_no = fields.text(data, "outTradeNo", max_len=64)
    order = rt.state.order(out_trade_no)
    if order is None or rt.hidden_from_query(order):
        raise Rejected("ORDER_NOT_EXIST")
    return ok(views.order_query_data(order))
