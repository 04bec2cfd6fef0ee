"""``/refund`` and ``/refundQuery``, and how a refund ends.

Rules, checked in this order (WIRE.md §17, §26; the codes are configurable where the docs
are silent): a known ``outRefundNo`` replays the stored answer with the current status when
order, amount and currency match, else ``ORDER_REPEAT``; unknown order ``ORDER_NOT_EXIST``;
order not SUCCESS ``refund_not_refundable_code``; past the refund window ``PARAMS_INVALID``;
currency not the order's ``CURRENCY_INVALID``; another refund still pending
``refund_in_progress_code``; more than paid minus (succeeded + pending refunds)
``refund_amount_code``; a simulated low balance ``REFUND_INSUFFICIENT_BALANCE``.

An accepted refund is REFUND_PENDING until the control API completes it, or until
``refund_auto_complete_seconds`` (scaled) pass; ``comments`` of ``REFUND_FAILED`` makes that
automatic completion fail. Completion notifies.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog

from worker.simulator import fields, views
from worker.simulator.envelope import Rejected, Reply, ok
from worker.simulator.records import Order, OrderStatus, Refund, RefundStatus
from worker.simulator.runtime import Runtime

log = structlog.get_logger("worker.simulator")
FAIL_TRIGGER = "REFUND_FAILED"


def refund(rt: Runtime, data: dict[str, Any], base_url: str) -> Reply:
    out_refund_no = fields.text(data, "outRefundNo", max_len=64)
    currency = fields.currency(data, "refundCurrency")
    amount = fields.amount(data, "refundAmount", currency)
    order = _find_order(rt, data)
    existing = rt.state.refund(out_refund_no)
    if existing is not None:
        return _duplicate(rt, existing, order, amount, currency)
    if order is None:
        raise Rejected("ORDER_NOT_EXIST")
    _check_refundable(rt, order, amount, currency)
    created = _create(rt, data, order, out_refund_no, amount)
    return ok(views.refund_reply_data(created))


def _find_order(rt: Runtime, data: dict[str, Any]) -> Order | None:
    out_trade_no = fields.optional_text(data, "outTradeNo", max_len=64)
    trade_token = fields.optional_text(data, "tradeToken", max_len=64)
    if out_trade_no is None and trade_token is None:
        raise Rejected("PARAMS_INVALID", "outTradeNo or tradeToken is required")
    order = rt.state.order(out_trade_no) if out_trade_no else rt.state.order_by_trade_token(trade_token or "")
    if order is not None and trade_token is not None and order.trade_token != trade_token:
        return None
    return order


def _duplicate(rt: Runtime, existing: Refund, order: Order | None, amount: Decimal, currency: str) -> Reply:
    same = (
        order is not None
        and order.out_trade_no.lower() == existing.out_trade_no.lower()
        and amount == existing.amount
        and currency == existing.currency
    )
    if same and rt.config.refund_duplicate_replay:
        log.info("sim.refund.replayed", out_refund_no=existing.out_refund_no)
        return ok(views.refund_reply_data(existing))
    raise Rejected("ORDER_REPEAT", "Duplicate refund", views.refund_reply_data(existing))


def _check_refundable(rt: Runtime, order: Order, amount: Decimal, currency: str) -> None:
    config = rt.config
    if order.status is not OrderStatus.SUCCESS:
        raise Rejected(config.refund_not_refundable_code, "order status not refundable")
    paid_at = order.completed_at or order.created_at
    if rt.clock.now() - paid_at > timedelta(days=config.refund_window_days):
        raise Rejected("PARAMS_INVALID", "order is past the refund period")
    if currency != order.currency:
        raise Rejected("CURRENCY_INVALID", "refundCurrency does not match the order currency")
    others = rt.state.refunds_of(order.out_trade_no)
    if any(r.status is RefundStatus.REFUND_PENDING for r in others):
        raise Rejected(config.refund_in_progress_code, "Currently in refund process")
    taken = sum((r.amount for r in others if r.status is not RefundStatus.REFUND_FAILED), Decimal(0))
    if amount > order.amount - taken:
        raise Rejected(config.refund_amount_code, "refundAmount exceeds the refundable amount")
    if rt.faults.refund_insufficient_balance:
        raise Rejected("REFUND_INSUFFICIENT_BALANCE")


def _create(rt: Runtime, data: dict[str, Any], order: Order, out_refund_no: str, amount: Decimal) -> Refund:
    now = rt.clock.now()
    notify_url = fields.url(data, "refundNotifyUrl")
    created = Refund(
        out_refund_no=out_refund_no,
        refund_trade_no=rt.ids.trade_no(now),
        trade_order_no=order.trade_order_no,
        out_trade_no=order.out_trade_no,
        amount=amount,
        currency=order.currency,
        comments=fields.optional_text(data, "comments", max_len=512),
        notify_url=notify_url,
        created_at=now,
    )
    rt.state.put_refund(created)
    rt.state.count_refund_created(out_refund_no)
    if rt.config.refund_auto_complete_seconds is not None:
        rt.scheduler.after(rt.scaled(rt.config.refund_auto_complete_seconds), lambda: auto_complete(rt, out_refund_no))
    log.info("sim.refund.created", out_refund_no=out_refund_no, out_trade_no=order.out_trade_no, amount=str(amount))
    return created


def default_outcome(refund_record: Refund) -> RefundStatus:
    failing = (refund_record.comments or "").strip().upper() == FAIL_TRIGGER
    return RefundStatus.REFUND_FAILED if failing else RefundStatus.REFUND_SUCCESS


def auto_complete(rt: Runtime, out_refund_no: str) -> None:
    pending = rt.state.refund(out_refund_no)
    if pending is not None and not pending.terminal:
        complete(rt, pending, default_outcome(pending))


def complete(
    rt: Runtime, pending: Refund, status: RefundStatus, *, msg: str | None = None, notify: bool = True
) -> Refund:
    failed = status is RefundStatus.REFUND_FAILED
    done = replace(
        pending, status=status, finished_at=rt.clock.now(), result_msg=(msg or "Refund failed.") if failed else ""
    )
    rt.state.put_refund(done)
    log.info("sim.refund.completed", out_refund_no=done.out_refund_no, status=str(status))
    if notify:
        code, text, payload = views.refund_notification(done)
        url = done.notify_url or rt.config.default_refund_notify_url
        rt.notifier.send(kind="refund", key=done.out_refund_no, url=url, code=code, msg=text, data=payload)
    return done


def refund_query(rt: Runtime, data: dict[str, Any], base_url: str) -> Reply:
    out_refund_no = fields.optional_text(data, "outRefundNo", max_len=64)
    refund_trade_no = fields.optional_text(data, "refundTradeNo", max_len=64)
    if out_refund_no is None and refund_trade_no is None:
        raise Rejected("PARAMS_INVALID", "outRefundNo or refundTradeNo is required")
    found = rt.state.refund(out_refund_no) if out_refund_no else rt.state.refund_by_trade_no(refund_trade_no or "")
    if found is None:
        raise Rejected("ORDER_NOT_EXIST")
    return ok(views.refund_query_data(found))
