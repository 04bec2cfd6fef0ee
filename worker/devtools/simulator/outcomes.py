"""How a payment ends: the outcome triggers, completion, token minting and expiry.

A payment is PENDING until exactly one completion moves it to SUCCESS, FAILED or CLOSED
(no transition out of a terminal state unless the control API forces one, to let tests
produce contradictions on purpose). Completion notifies, for terminal states only.

Triggers (WIRE.md §23, PayerMax P9) decide Direct_Payment card and token payments at once:
``subject`` SUCCESS/FAILED/PENDING/3DS, else (with ``amount_triggers``) the legacy amounts,
else SUCCESS. Hosted payments, and direct methods that need a redirect, wait for the
cashier page or the control API.

A successful CARD payment that offered ``tokenForFutureUse`` mints a token bound to the
user, unless the user declined consent; the same user paying with the same card again gets
the same active token back.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum

import structlog

from worker.devtools.simulator import views
from worker.devtools.simulator.ids import mask_token
from worker.devtools.simulator.records import Card, Order, OrderStatus, Token, TokenStatus
from worker.devtools.simulator.runtime import SimulatorRuntime

log = structlog.get_logger("worker.devtools.simulator")
SYNC_METHODS = frozenset({"CARD", "APPLEPAY", "GOOGLEPAY"})
TEST_CARDS = {"VISA": "4111111111111111", "MASTERCARD": "5555555555554444", "AMEX": "378282246310005"}
FAIL_AMOUNTS = frozenset(Decimal(v) for v in ("15", "500", "1.12", "20000", "25000"))
PENDING_AMOUNTS = frozenset(Decimal(v) for v in ("6", "60", "600", "16000"))
CHALLENGE_AMOUNTS = frozenset({Decimal(222)})
DEFAULT_FAILURE = {
    OrderStatus.FAILED: ("PAYMENT_FAILED", "Payment failed."),
    OrderStatus.CLOSED: ("ORDER_CLOSED", "Order closed."),
}
EXPIRED = ("PAYMENT_FAILED", "Payment was not completed on time.")


class Plan(Enum):
    """What ``/orderAndPay`` does right after creating the order."""

    CASHIER = "cashier"  # PENDING + redirectUrl to the cashier page
    CHALLENGE = "challenge"  # PENDING + redirectUrl to a 3DS challenge
    PENDING = "pending"  # PENDING, resolved later by the control API
    SUCCESS = "success"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    status: OrderStatus
    code: str | None = None
    msg: str | None = None
    three_ds: bool = False
    token_consent: bool = True
    notify: bool = True


def initial_plan(
    *, direct: bool, method: str | None, token: bool, subject: str, amount: Decimal, amount_triggers: bool, do_3ds: bool
) -> Plan:
    if not direct:
        return Plan.CASHIER
    if not token and (method or "").upper() not in SYNC_METHODS:
        return Plan.CASHIER
    by_subject = {"SUCCESS": Plan.SUCCESS, "FAILED": Plan.FAILED, "PENDING": Plan.PENDING, "3DS": Plan.CHALLENGE}
    plan = by_subject.get(subject.strip().upper())
    if plan is None and amount_triggers:
        plan = _amount_plan(amount)
    if plan is None:
        plan = Plan.CHALLENGE if do_3ds else Plan.SUCCESS
    return plan


def _amount_plan(amount: Decimal) -> Plan | None:
    if amount in FAIL_AMOUNTS:
        return Plan.FAILED
    if amount in PENDING_AMOUNTS:
        return Plan.PENDING
    return Plan.CHALLENGE if amount in CHALLENGE_AMOUNTS else None


def card_from_pan(pan: str, *, holder: str = "James Smith", month: str = "12", year: str = "30") -> Card:
    digits = "".join(ch for ch in pan if ch.isdigit()) or TEST_CARDS["VISA"]
    masked = digits[:6] + "*" * max(len(digits) - 10, 0) + digits[-4:]
    return Card(
        org=_card_org(digits),
        country="US",
        masked=masked,
        holder_masked="**" + holder[2:],
        expiry_month=month.zfill(2)[-2:],
        expiry_year=year.zfill(2)[-2:],
    )


def payer_card(allowed_orgs: tuple[str, ...]) -> Card:
    """The card the simulated payer uses: the first test card the order allows."""
    for org in allowed_orgs:
        if org.upper() in TEST_CARDS:
            return card_from_pan(TEST_CARDS[org.upper()])
    return card_from_pan(TEST_CARDS["VISA"])


def _card_org(digits: str) -> str:
    if digits.startswith("4"):
        return "VISA"
    if digits[:2] in {"51", "52", "53", "54", "55"} or "2221" <= digits[:4] <= "2720":
        return "MASTERCARD"
    return "AMEX" if digits[:2] in {"34", "37"} else "UNKNOWN"


def complete(rt: SimulatorRuntime, order: Order, how: Completion) -> Order:
    """Move ``order`` to a terminal state, store it and (usually) notify."""
    now = rt.clock.now()
    if how.status is OrderStatus.SUCCESS:
        done = _succeed(rt, order, how, now)
    else:
        code, msg = DEFAULT_FAILURE.get(how.status, ("PAYMENT_FAILED", "Payment failed."))
        done = replace(
            order,
            status=how.status,
            completed_at=now,
            result_code=how.code or code,
            result_msg=how.msg or msg,
            three_ds_ran=how.three_ds,
        )
    rt.state.put_order(done)
    log.info(
        "sim.order.completed",
        out_trade_no=done.out_trade_no,
        status=str(done.status),
        result_code=done.result_code,
        token_minted=bool(done.token_minted),
    )
    if how.notify:
        notify_payment(rt, done)
    return done


def _succeed(rt: SimulatorRuntime, order: Order, how: Completion, now: datetime) -> Order:
    method = order.payment_method_type or "CARD"
    card = order.card or (payer_card(()) if method == "CARD" else None)
    minted = None
    if card is not None and method == "CARD" and order.token_offered and order.token_used is None:
        minted = _mint(rt, order, card, now).token_id if how.token_consent else None
    return replace(
        order,
        status=OrderStatus.SUCCESS,
        completed_at=now,
        payment_method_type=method,
        country=order.country or (card.country if card is not None else None),
        card=card,
        token_minted=minted,
        three_ds_ran=how.three_ds,
        result_code=None,
        result_msg="",
    )


def _mint(rt: SimulatorRuntime, order: Order, card: Card, now: datetime) -> Token:
    for token in rt.state.tokens(order.user_id):
        same_card = token.card.masked == card.masked and token.card.org == card.org
        if same_card and token.status_at(now) is TokenStatus.ACTIVATED:
            return token
    token = Token(
        token_id=rt.ids.payment_token_id(now),
        user_id=order.user_id,
        card=card,
        expiry=card_expiry(card),
        created_at=now,
        out_trade_no=order.out_trade_no,
    )
    rt.state.put_token(token)
    log.info("sim.token.minted", token=mask_token(token.token_id), out_trade_no=order.out_trade_no)
    return token


def card_expiry(card: Card) -> datetime:
    """Tokens live as long as the card: to the last second of its expiry month."""
    year, month = 2000 + int(card.expiry_year), int(card.expiry_month)
    last_day = calendar.monthrange(year, month)[1]
    return datetime(year, month, last_day, 23, 59, 59, tzinfo=UTC)


def notify_payment(rt: SimulatorRuntime, order: Order) -> None:
    code, msg, data = views.payment_notification(order)
    url = order.notify_url or rt.config.default_notify_url
    rt.notifier.send(kind="payment", key=order.out_trade_no, url=url, code=code, msg=msg, data=data)


def expire(rt: SimulatorRuntime, out_trade_no: str) -> None:
    """Scheduled at ``expireTime``: an order still PENDING closes, and the merchant hears of it."""
    order = rt.state.order(out_trade_no)
    if order is None or order.terminal or rt.clock.now() < order.expire_at:
        return
    code, msg = EXPIRED
    complete(rt, order, Completion(status=OrderStatus.CLOSED, code=code, msg=msg))
