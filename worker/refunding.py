"""Refunds: created under the money rule, submitted one at a time per order, resolved like orders.

Creation checks Σ(pending + successful + unknown refunds) + amount ≤ paid inside one
transaction that compare-and-sets the order's ``refund_seq``, so two concurrent requests
whose sum exceeds the paid amount cannot both be created. A created refund waits its turn
while another refund of the same order is in progress (Checus allows one at a time), and is
submitted when the slot frees. The ``outRefundNo`` is fixed at creation: a resubmit after an
unknown outcome reuses it, so Checus can never refund twice for one request.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

from statemachine import (
    RefundEvent,
    RefundSubmitAccepted,
    RefundSubmitDuplicate,
    RefundSubmitRejected,
    RefundSubmitUnknown,
    may_submit,
)

from .bootstrap import Runtime
from .crashpoints import crash_point
from .gateway import DuplicateRequest, GatewayRejected, OutcomeUnknown
from .gateway.requests import Refund, check_merchant_no
from .notifications import rematch
from .store import repo
from .store.apply import Stale
from .store.db import read, write
from .store.records import RefundRecord
from .store.repo import RefundRefused
from .transition import change_refund

RETRY_LATER = frozenset({"REFUND_INSUFFICIENT_BALANCE", "REFUND_FAILED"})


def new_refund_no() -> str:
    return "R" + secrets.token_hex(12).upper()


def create_refund(rt: Runtime, out_trade_no: str, amount: Decimal, *, out_refund_no: str | None = None,
                  comments: str | None = None) -> RefundRecord:
    """Record a refund request (refused locally if it breaks a rule) and queue its submission."""
    number = check_merchant_no(out_refund_no or new_refund_no(), "outRefundNo")
    for _ in range(5):
        try:
            with write(rt.engine) as conn:
                existing = repo.find_refund(conn, number)
                if existing is not None:
                    return existing  # the same request again: idempotent on outRefundNo
                order = repo.find_order(conn, out_trade_no)
                if order is None:
                    raise RefundRefused("unknown_order")
                refund_id = repo.insert_refund(conn, order, out_refund_no=number, amount=amount,
                                               currency=order.currency, comments=comments, now=rt.clock())
                refund = repo.get_refund(conn, refund_id)
            break
        except Stale:
            continue
    else:
        raise RefundRefused("busy")
    assert refund is not None
    rematch(rt, "refund", number)
    rt.enqueuer.submit_refund(refund.id)
    return refund


def submit_refund(rt: Runtime, refund_id: int) -> str:
    """Send a CREATED refund to Checus if the order's refund slot is free; record the answer."""
    with read(rt.engine) as conn:
        refund = repo.get_refund(conn, refund_id)
        if refund is None or refund.state != "CREATED":
            return "not_created"
        order = repo.get_order(conn, refund.order_id)
        others = [r for r in repo.refunds_of(conn, refund.order_id) if r.id != refund.id]
    if order is None:
        return "missing"
    if not may_submit(repo.refund_pairs(others)):
        return "waiting_turn"  # started again when the refund in progress ends
    request = Refund(out_refund_no=refund.out_refund_no, out_trade_no=order.out_trade_no, amount=refund.amount,
                     currency=refund.currency, comments=refund.comments, refund_notify_url=rt.notify_url("refund"))
    event: RefundEvent
    refund_trade_no = None
    answered: dict[str, str] = {}
    try:
        reply = rt.client.refund(request)
        crash_point("after_gateway_call")
        answered = {"status": reply.status.value}
        event, refund_trade_no = RefundSubmitAccepted(status=_submit_status(reply.status.value)), reply.refund_trade_no
    except DuplicateRequest:
        event = RefundSubmitDuplicate()
    except GatewayRejected as exc:
        event = RefundSubmitRejected(code=exc.code)
    except OutcomeUnknown:
        event = RefundSubmitUnknown()
    updates = {"last_submit_at": rt.clock(), **({"refund_trade_no": refund_trade_no} if refund_trade_no else {})}
    evidence = {"api": "refund", "answer": type(event).__name__, **answered}
    applied = change_refund(rt, refund.id, refund.order_id, lambda _r: event, source="api", evidence=evidence,
                            updates=updates)
    if isinstance(event, RefundSubmitRejected) and applied and applied.decision.to_state is None \
            and event.code in RETRY_LATER:
        rt.enqueuer.submit_refund(refund.id, delay=timedelta(seconds=rt.timers.refund_retry))
    return str(applied.decision.outcome) if applied else "missing"


def _submit_status(status: str) -> str:
    """The /refund answer as the refund table reads it. A resubmit with the same outRefundNo (its first
    answer was lost with a crashed worker) is answered with the refund's *current* status, which may be
    REFUND_SUCCESS by then: like a synchronous SUCCESS from /orderAndPay that is a hint, not a report, so
    the refund is recorded accepted (REFUND_PENDING) and its poll or notification settles it."""
    return "REFUND_PENDING" if status == "REFUND_SUCCESS" else status
