"""Applying a kept notification: re-verify, match, decide, and mark the inbox row — in one commit.

The worker trusts nothing it reads from Redis or from the inbox without checking: the raw
body is verified again against the platform keys (a row forged into the store, or a job
forged into the queue, changes nothing). A row it cannot verify or parse is kept and retried,
never finished: the receiver accepted it, so this worker may simply not trust the new key yet.
A notification for an order or refund we do not know yet is deferred and matched again later
(a commit race with the API, or a refund made in the Checus portal); after the last retry it
becomes an anomaly, never a silent drop.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from statemachine import Decision, GatewayReport, RefundReport, SaveToken, Source, decide_unknown_refund
from worker.flows.transition import MAX_STALE_RETRIES, after_commit, change_order, change_refund
from worker.gateway.notifications import PaymentNotification, RefundNotification
from worker.gateway.replies import OrderStatusReply, ReplyInvalid
from worker.gateway.wire import WireFormatError, loads_object
from worker.metrics import NOTIFICATIONS_DEFERRED
from worker.runtime import Runtime
from worker.store import anomalies as anomalies_store
from worker.store import inbox, repo
from worker.store.apply import Stale, Target, apply
from worker.store.db import read, write
from worker.store.inbox import InboxEntry

log = structlog.get_logger("worker.flows.notifications")
UNREADABLE = {"unverified": "unverified_notification", "unparsed": "unparsed_notification"}  # reason -> anomaly


def apply_notification(rt: Runtime, inbox_id: int) -> str:
    """Apply one inbox row; returns the outcome recorded on it."""
    with read(rt.engine) as conn:
        entry = inbox.get(conn, inbox_id)
    if entry is None or entry.processed_at is not None:
        return "already_processed" if entry else "missing"
    if not rt.verifier.verify(entry.body, entry.sign):
        return _defer_unreadable(rt, entry, "unverified")
    try:
        body = loads_object(entry.body)
        note = PaymentNotification.read(body) if entry.kind == "payment" else RefundNotification.read(body)
    except (WireFormatError, ReplyInvalid):
        return _defer_unreadable(rt, entry, "unparsed")
    if entry.outcome in UNREADABLE:
        _readable_again(rt, entry)
    if isinstance(note, PaymentNotification):
        return _apply_payment(rt, entry, note)
    return _apply_refund(rt, entry, note)


def _defer_unreadable(rt: Runtime, entry: InboxEntry, reason: str) -> str:
    """Keep a row this worker cannot verify or parse, retry it with backoff, and tell an operator once.

    Why never finish it: the receiver verified and parsed the row before acknowledging it, so a
    worker that cannot is most likely the one out of date (a platform key rotation or a deploy that
    has not reached it yet). Finished, the notification would be lost for good: Checus's retries are
    acknowledged by the receiver's seen-key. A row altered in the store is kept the same way, and
    changes nothing for as long as it does not verify.
    """
    ladder = rt.timers.unverified_retries
    now = rt.clock()
    retry_at = now + timedelta(seconds=ladder[min(entry.attempts, len(ladder) - 1)])
    with write(rt.engine) as conn:
        inbox.defer(conn, entry.id, outcome=reason, retry_at=retry_at)
        anomalies_store.record(
            conn, entity="inbox", entity_id=entry.id, ref=entry.ref, kind=UNREADABLE[reason],
            detail=f"{entry.kind} notification kept by the receiver that this worker cannot "
                   f"{'verify' if reason == 'unverified' else 'parse'}: retried until it can",
            evidence={"inbox_id": entry.id}, now=now)
    NOTIFICATIONS_DEFERRED.labels(entry.kind, reason).inc()
    log.warning("notification.unreadable", inbox_id=entry.id, ref=entry.ref, reason=reason, retry_at=str(retry_at))
    return f"deferred_{reason}"


def _readable_again(rt: Runtime, entry: InboxEntry) -> None:
    """A row deferred as unreadable now verifies and parses: its anomaly is over."""
    with write(rt.engine) as conn:
        anomalies_store.resolve_open(conn, entity="inbox", entity_id=entry.id, kinds=UNREADABLE.values(),
                                     now=rt.clock(), resolution="the worker now verifies and reads it")


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


def save_token_from(conn: Connection, rt: Runtime, order_id: int, state: OrderStatusReply,
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
            anomalies_store.record(conn, entity="inbox", entity_id=entry.id, ref=entry.ref, kind=outcome,
                                   detail=f"{entry.kind} notification for unknown {entry.ref}",
                                   evidence={"inbox_id": entry.id}, now=now)
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
    for _ in range(MAX_STALE_RETRIES):
        try:
            return _adopt(rt, entry, note, order.id, report, evidence)
        except Stale:  # another refund of the order was written meanwhile: decide again on what is there now
            continue
    raise Stale(f"the refunds of order {order.id} kept changing")


def _adopt(rt: Runtime, entry: InboxEntry, note: RefundNotification, order_id: int, report: RefundReport,
           evidence: dict[str, Any]) -> str:
    """One attempt: decide on the order's refunds as read, insert under the order's ``refund_seq``."""
    with write(rt.engine) as conn:
        current = repo.get_order(conn, order_id)
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
            target = Target(entity="inbox", id=entry.id, ref=note.refund.out_refund_no, version=None)
        apply(conn, target, decision, source="notification", evidence=evidence, now=rt.clock())
        inbox.mark_processed(conn, entry.id, outcome=f"adopted_{decision.outcome}", now=rt.clock())
    after_commit(rt, "refund", target.id, order_id, decision)
    return f"adopted_{decision.outcome}"
