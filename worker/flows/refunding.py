"""Refunds: created under the money rule, sent one at a time per order, resolved like orders.

Creation checks Σ(pending + successful + unknown refunds) + amount ≤ paid inside one
transaction that compare-and-sets the order's ``refund_seq``, so two concurrent requests
whose sum exceeds the paid amount cannot both be created. A created refund waits its turn
while another refund of the same order is in progress (Checus allows one at a time): its send
is *claimed* (CREATED → UNKNOWN) in a transaction that compare-and-sets the order's
``refund_seq`` again, so two refunds of one order are never in flight together, and only then
is /refund called. The ``outRefundNo`` is fixed at creation: a resend after an unknown outcome
reuses it, so Checus can never refund twice for one request.

"Not now" answers (``statemachine.RETRY_LATER_CODES``) put the refund back to CREATED and its
next send is due after a growing delay (``Timers.refund_retry`` doubling, at most
``Timers.refund_retry_max``); after ``statemachine.MAX_RETRY_LATER`` of them it is given up
(REFUND_FAILED and a ``refund_retry_exhausted`` anomaly). Nothing had happened at the gateway.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from statemachine import (
    Decision,
    RefundSendAnswer,
    RefundState,
    RefundSubmitAccepted,
    RefundSubmitDuplicate,
    RefundSubmitRejected,
    RefundSubmitUnknown,
)
from worker.flows.notifications import rematch
from worker.flows.transition import change_refund, claim_refund_send, ledger_updates
from worker.gateway import DuplicateRequest, GatewayRejected, OutcomeUnknown
from worker.gateway.errors import RequestInvalid
from worker.gateway.money import AmountError, parse_amount
from worker.gateway.requests import Refund, check_merchant_no
from worker.runtime import Runtime
from worker.runtime.crashpoints import crash_point
from worker.service_errors import Busy, Conflict, InvalidRequest, RefundRefused
from worker.store import repo
from worker.store.apply import Stale
from worker.store.db import read, write
from worker.store.records import RefundRecord

log = structlog.get_logger("worker.flows.refunding")


def new_refund_no() -> str:
    return "R" + secrets.token_hex(12).upper()


def create_refund(rt: Runtime, out_trade_no: str, amount: Decimal, *, out_refund_no: str | None = None,
                  comments: str | None = None) -> RefundRecord:
    """Record a refund request (refused locally if it breaks a rule) and ask for its send.

    The same ``out_refund_no`` again returns the existing refund when it is the same request
    (order and amount), and is a ``Conflict`` otherwise.
    """
    try:
        number = check_merchant_no(out_refund_no or new_refund_no(), "outRefundNo")
    except RequestInvalid as exc:
        raise InvalidRequest(str(exc), field="out_refund_no") from None
    for _ in range(10):
        try:
            refund, created = _insert(rt, out_trade_no, number, amount, comments)
            break
        except Stale:
            continue
        except IntegrityError:  # the same number, inserted concurrently: read what won
            continue
    else:
        raise Busy(f"the refunds of {out_trade_no} kept changing; nothing was done")
    if created:
        with contextlib.suppress(RedisError, SQLAlchemyError):  # the scheduler's due poll sends it otherwise
            rematch(rt, "refund", number)
            rt.enqueuer.submit_refund(refund.id)
    return refund


def _insert(rt: Runtime, out_trade_no: str, number: str, amount: Decimal,
            comments: str | None) -> tuple[RefundRecord, bool]:
    with write(rt.engine) as conn:
        existing = repo.find_refund(conn, number)
        order = repo.find_order(conn, out_trade_no)
        if existing is not None:
            if order is None or existing.order_id != order.id or existing.amount != amount:
                raise Conflict(f"{number} is already a refund of another order or amount", ref=number)
            return existing, False  # the same request again: idempotent on outRefundNo
        if order is None:
            raise RefundRefused("unknown_order")
        valid = _valid_amount(amount, order.currency)
        refund_id, check = repo.insert_refund(conn, order, out_refund_no=number, amount=valid,
                                              currency=order.currency, comments=comments, now=rt.clock())
        if refund_id is None:
            raise RefundRefused(check.reason or "refused", check.refundable)
        refund = repo.get_refund(conn, refund_id)
    assert refund is not None
    return refund, True


def _valid_amount(amount: Decimal, currency: str) -> Decimal:
    """The amount in the order's currency, or ``InvalidRequest`` (more decimals than it has, zero, negative)."""
    try:
        return parse_amount(amount, currency)
    except AmountError as exc:
        raise InvalidRequest(f"amount: {exc}", field="amount") from None


def submit_refund(rt: Runtime, refund_id: int) -> str:
    """Claim the send of a CREATED refund (if its order's refund slot is free), call /refund, record."""
    client = rt.client  # a worker that cannot sign claims nothing
    with read(rt.engine) as conn:
        refund = repo.get_refund(conn, refund_id)
        order = repo.get_order(conn, refund.order_id) if refund else None
    if refund is None or order is None or refund.state != RefundState.CREATED:
        return "not_created"
    request = Refund(out_refund_no=refund.out_refund_no, out_trade_no=order.out_trade_no, amount=refund.amount,
                     currency=refund.currency, comments=refund.comments, refund_notify_url=rt.notify_url("refund"))
    claim = claim_refund_send(rt, refund.id, refund.order_id)
    if claim is None or claim.decision.to_state is not RefundState.UNKNOWN:
        return "waiting_turn" if claim and claim.decision.trigger == "send_waits_turn" else "not_claimed"
    send_no = claim.record.ledger.sends + 1
    crash_point("after_claim")
    event, extra = _send(client, request, send_no)
    crash_point("after_gateway_call")
    evidence = {"api": "refund", "answer": type(event).__name__, "send": send_no, **extra,
                "code": getattr(event, "code", None)}
    updates = ledger_updates(rt, send_no, event.answer,
                             {"refund_trade_no": extra["refund_trade_no"]} if extra.get("refund_trade_no") else None)
    applied = change_refund(rt, refund.id, refund.order_id, lambda _r: event, source="api", evidence=evidence,
                            updates=_with_retry_time(rt, updates))
    return str(applied.decision.outcome) if applied else "missing"


def _send(client: Any, request: Refund, send_no: int) -> tuple[RefundSendAnswer, dict[str, str]]:
    try:
        reply = client.refund(request)
        extra = {"status": reply.status.value, "refund_trade_no": reply.refund_trade_no or ""}
        return RefundSubmitAccepted(status=_submit_status(reply.status.value)), extra
    except DuplicateRequest:
        return RefundSubmitDuplicate(), {}
    except GatewayRejected as exc:
        return RefundSubmitRejected(code=exc.code, send_no=send_no), {}
    except OutcomeUnknown:
        return RefundSubmitUnknown(), {}
    except Exception as exc:  # noqa: BLE001 - whatever broke after the request left, its outcome is unknown
        log.error("refund.send_failed", out_refund_no=request.out_refund_no, error=type(exc).__name__)
        return RefundSubmitUnknown(), {}


def _with_retry_time(rt: Runtime, updates: Any) -> Any:
    """A refund put back to CREATED by a "not now" answer is due again after a growing delay."""
    def with_retry(record: RefundRecord, decision: Decision[Any]) -> dict[str, Any]:
        values: dict[str, Any] = updates(record, decision)
        if decision.to_state is RefundState.CREATED:
            waits = max(1, int(values.get("clean_sends", record.ledger.clean)))
            delay = min(rt.timers.refund_retry * 2 ** (waits - 1), rt.timers.refund_retry_max)
            values["next_poll_at"] = rt.clock() + timedelta(seconds=delay)
        return values

    return with_retry


def _submit_status(status: str) -> str:
    """The /refund answer as the refund table reads it. A resubmit with the same outRefundNo (its first
    answer was lost with a crashed worker) is answered with the refund's *current* status, which may be
    REFUND_SUCCESS by then: like a synchronous SUCCESS from /orderAndPay that is a hint, not a report, so
    the refund is recorded accepted (REFUND_PENDING) and its poll or notification settles it."""
    return "REFUND_PENDING" if status == "REFUND_SUCCESS" else status
