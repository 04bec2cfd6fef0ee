"""``/refund`` and ``/refundQuery``, and how a refund ends.

Rules, checked in this order (WIRE.md §17, §26; the codes are configurable where the docs
are silent): a known ``outRefundNo`` is answered as the fault plan's ``repeat_answer`` says
(``repeats.py``); by default (``replay``) it replays the stored answer with the current status
when order, amount and currency match, else ``ORDER_REPEAT`` with the stored refund; unknown order ``ORDER_NOT_EXIST``;
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

from worker.devtools.simulator import fields, repeats, views
from worker.devtools.simulator.envelope import Rejected, Reply, ok
from worker.devtools.simulator.records import Order, OrderStatus, Refund, RefundStatus
from worker.devtools.simulator.repeats import Call
from worker.devtools.simulator.runtime import SimulatorRuntime

log = structlog.get_logger("worker.devtools.simulator")
FAIL_TRIGGER = "REFUND_FAILED"


def refund(rt: SimulatorRuntime, data: dict[str, Any], call: Call) -> Reply:
    out_refund_no = fields.text(data, "outRefundNo", max_len=64)
    currency = fields.currency(data, "refundCurrency")
    amount = fields.amount(data, "refundAmount", currency)
    order = _find_order(rt, data)
    existing = rt.state.refund(out_refund_no)
    if existing is not None:
        return repeats.answer(
            call.repeat,
            endpoint="refund",
            key=existing.out_refund_no,
            msg="Duplicate refund",
            data=views.refund_reply_data(existing),
            replay=lambda: _duplicate(rt, existing, order, amount, currency),
            count=rt.state.count_code,
        )
    if order is None:
        raise Rejected("ORDER_NOT_EXIST")
    _check_refundable(rt, order, amount, currency)
    created = _create(rt, data, order, out_refund_no, amount)
    return ok(views.refund_reply_data(created))


def _find_order(rt: SimulatorRuntime, data: dict[str, Any]) -> Order | None:
    out_trade_no = fields.optional_text(data, "outTradeNo", max_len=64)
    trade_token = fields.optional_text(data, "tradeToken", max_len=64)
    if out_trade_no is None and trade_token is None:
        raise Rejected("PARAMS_INVALID", "outTradeNo or tradeToken is required")
    order = rt.state.order(out_trade_no) if out_trade_no else rt.state.order_by_trade_token(trade_token or "")
    if order is not None and trade_token is not None and order.trade_token != trade_token:
        return None
    return order


def _duplicate(rt: SimulatorRuntime, existing: Refund, order: Order | None, amount: Decimal, currency: str) -> Reply:
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


def _check_refundable(rt: SimulatorRuntime, order: Order, amount: Decimal, currency: str) -> None:
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


def _create(rt: SimulatorRuntime, data: dict[str, Any], order: Order, out_refund_no: str, amount: Decimal) -> Refund:
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


def auto_complete(rt: SimulatorRuntime, out_refund_no: str) -> None:
    pending = rt.state.refund(out_refund_no)
    if pending is not None and not pending.terminal:
        complete(rt, pending, default_outcome(pending))


def complete(
    rt: SimulatorRuntime, pending: Refund, status: RefundStatus, *, msg: str | None = None, notify: bool = True
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


def refund_query(rt: SimulatorRuntime, data: dict[str, Any], call: Call) -> Reply:
    out_refund_no = fields.optional_text(data, "outRefundNo", max_len=64)
    refund_trade_no = fields.optional_text(data, "refundTradeNo", max_len=64)
    if out_refund_no is None and refund_trade_no is None:
        raise Rejected("PARAMS_INVALID", "outRefundNo or refundTradeNo is required")
    found = rt.state.refund(out_refund_no) if out_refund_no else rt.state.refund_by_trade_no(refund_trade_no or "")
    if found is None:
        raise Rejected("ORDER_NOT_EXIST")
    return ok(views.refund_query_data(found))
