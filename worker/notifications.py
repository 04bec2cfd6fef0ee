"""Applying a kept notification: re-verify, match, decide, and mark the inbox row — in one commit.

The worker trusts nothing it reads from Redis or from the inbox without checking: the raw
body is verified again against the platform keys (a row forged into the store, or a job
forged into the queue, changes nothing). A notification for an order or refund we do not
know yet is deferred and matched again later (a commit race with the API, or a refund made
in the Checus portal); after the last retry it becomes an anomaly, never a silent drop.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from statemachine import Decision, GatewayReport, RefundReport, SaveToken, Source, decide_unknown_refund

from .bootstrap import Runtime
from .gateway.replies import OrderState, PaymentNotification, RefundNotification, ReplyInvalid
from .gateway.wire import WireFormatError, loads_object
from .store import inbox, repo
from .store.apply import Target, apply
from .store.db import read, write
from .store.inbox import InboxEntry
from .store.schema import anomalies
from .transition import after_commit, change_order, change_refund

log = structlog.get_logger("worker.notifications")


def apply_notification(rt: Runtime, inbox_id: int) -> str:
    """Apply one inbox row; returns the outcome recorded on it."""
    with read(rt.engine) as conn:
        entry = inbox.get(conn, inbox_id)
    if entry is None or entry.processed_at is not None:
        return "already_processed" if entry else "missing"
    if not rt.verifier.verify(entry.body, entry.sign):
        log.error("notification.forged_in_store", inbox_id=inbox_id)
        return _finish(rt, entry, "forged")
    try:
        body = loads_object(entry.body)
        if entry.kind == "payment":
            return _apply_payment(rt, entry, PaymentNotification.read(body))
        return _apply_refund(rt, entry, RefundNotification.read(body))
    except (WireFormatError, ReplyInvalid):
        return _finish(rt, entry, "malformed")


def _finish(rt: Runtime, entry: InboxEntry, outcome: str) -> str:
    with write(rt.engine) as conn:
        inbox.mark_processed(conn, entry.id, outcome=outcome, now=rt.clock())
    return outcome


def _mark(entry: InboxEntry, rt: Runtime) -> Any:
    def also(conn: Connection, _record: Any, decision: Decision[Any]) -> None:
        inbox.mark_processed(conn, entry.id, outcome=str(decision.outcome), now=rt.clock())

    return also


def evidence_of(entry: InboxEntry, note: Any) -> dict[str, Any]:
    return {"inbox_id": entry.id, "code": note.header.code, "notify_time": str(note.header.notify_time)}


def _apply_payment(rt: Runtime, entry: InboxEntry, note: PaymentNotification) -> str:
    with read(rt.engine) as conn:
        order = repo.find_order(conn, note.order.out_trade_no)
    if order is None:
        return _defer_unknown(rt, entry, "unknown_order")
    report = GatewayReport(
        status=note.order.status.value, amount=note.order.amount, currency=note.order.currency,
        source=Source.NOTIFICATION, app_id=note.header.app_id, merchant_no=note.header.merchant_no,
        has_token=note.order.payment_token_id is not None,
    )
    mark = _mark(entry, rt)

    def also(conn: Connection, record: Any, decision: Decision[Any]) -> None:
        save_token_from(conn, rt, record.id, note.order, decision)
        mark(conn, record, decision)

    applied = change_order(rt, order.id, lambda _o: report, source="notification",
                           evidence=evidence_of(entry, note), also=also)
    return str(applied.decision.outcome) if applied else "missing"


def save_token_from(conn: Connection, rt: Runtime, order_id: int, state: OrderState,
                    decision: Decision[Any]) -> None:
    """Carry out a SaveToken effect with the token the evidence carried (never held by the core)."""
    if not any(isinstance(e, SaveToken) for e in decision.effects) or not state.payment_token_id:
        return
    order = repo.get_order(conn, order_id)
    detail = next((d for d in state.payment_details if d.payment_token_id), None)
    if order is None:
        return
    repo.save_token(conn, user_id=order.user_id, token_id=state.payment_token_id,
                    card_org=detail.card_org if detail else None, masked_card=detail.masked_card if detail else None,
                    source_order_id=order.id, now=rt.clock())


def _apply_refund(rt: Runtime, entry: InboxEntry, note: RefundNotification) -> str:
    with read(rt.engine) as conn:
        refund = repo.find_refund(conn, note.refund.out_refund_no)
    if refund is None:
        adopted = adopt_unknown_refund(rt, entry, note)
        return adopted if adopted is not None else _defer_unknown(rt, entry, "unknown_refund")
    report = RefundReport(status=note.refund.status.value, amount=note.refund.amount,
                          currency=note.refund.currency, source=Source.NOTIFICATION)
    applied = change_refund(rt, refund.id, refund.order_id, lambda _r: report, source="notification",
                            evidence=evidence_of(entry, note), also=_mark(entry, rt))
    return str(applied.decision.outcome) if applied else "missing"


def _defer_unknown(rt: Runtime, entry: InboxEntry, outcome: str) -> str:
    """Keep the row and match it again later; after the last retry record an anomaly."""
    retries = rt.timers.orphan_retries
    now = rt.clock()
    with write(rt.engine) as conn:
        if entry.attempts >= len(retries):
            inbox.mark_processed(conn, entry.id, outcome=f"orphan_{outcome}", now=now)
            conn.execute(sa.insert(anomalies).values(
                entity="inbox", entity_id=entry.id, ref=entry.ref, kind=outcome,
                detail=f"{entry.kind} notification for unknown {entry.ref}", evidence=f'{{"inbox_id": {entry.id}}}',
                created_at=now))
            return f"orphan_{outcome}"
        retry_at = now + timedelta(seconds=retries[entry.attempts])
        inbox.defer(conn, entry.id, outcome=outcome, retry_at=retry_at)
    log.info("notification.deferred", inbox_id=entry.id, ref=entry.ref, reason=outcome, retry_at=str(retry_at))
    return f"deferred_{outcome}"


def rematch(rt: Runtime, kind: str, ref: str) -> None:
    """A new order or refund became known: apply notifications that were waiting for it."""
    with read(rt.engine) as conn:
        waiting = inbox.pending_for(conn, kind=kind, ref=ref)
    for entry_id in waiting:
        rt.enqueuer.apply_notification(entry_id)


def adopt_unknown_refund(rt: Runtime, entry: InboxEntry, note: RefundNotification) -> str | None:
    """A refund Checus reports that we never asked for (e.g. made in the portal): record it if it
    fits the order's refundable balance, else an anomaly. None when its order is unknown too."""
    with read(rt.engine) as conn:
        order = repo.find_order(conn, note.refund.out_trade_no or "")
    if order is None:
        return None
    report = RefundReport(status=note.refund.status.value, amount=note.refund.amount,
                          currency=note.refund.currency, source=Source.NOTIFICATION)
    evidence = {**evidence_of(entry, note), "adopted": True}
    with rt.locks.hold(order.id), write(rt.engine) as conn:
        current = repo.get_order(conn, order.id)
        assert current is not None
        decision = decide_unknown_refund(
            report, out_trade_no=current.out_trade_no, order_state=current.state, paid=current.amount,
            currency=current.currency, refunds=repo.refund_pairs(repo.refunds_of(conn, current.id)), now=rt.clock())
        if decision.to_state is not None:
            refund_id = repo.insert_refund_row(conn, current, out_refund_no=note.refund.out_refund_no,
                                               amount=report.amount, currency=report.currency,
                                               comments="reported by Checus", now=rt.clock(), next_poll_at=None)
            target = Target(entity="refund", id=refund_id, ref=note.refund.out_refund_no, version=1,
                            event_fields={"out_refund_no": note.refund.out_refund_no,
                                          "out_trade_no": current.out_trade_no, "amount": str(report.amount),
                                          "currency": report.currency})
        else:
            target = Target(entity="inbox", id=entry.id, ref=note.refund.out_refund_no, version=0)
        apply(conn, target, decision, source="notification", evidence=evidence, now=rt.clock())
        inbox.mark_processed(conn, entry.id, outcome=f"adopted_{decision.outcome}", now=rt.clock())
    after_commit(rt, "refund", target.id, order.id, decision)
    return f"adopted_{decision.outcome}"
