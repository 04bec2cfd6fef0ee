"""Read, decide, write: the one path every order or refund change takes.

Under the order's Redis lock (refunds take their order's lock: refund sums are per order),
one write transaction reads the record, asks the pure core for a ``Decision``, and writes it
with compare-and-set (``store.apply``). Extra writes that belong to the same fact (a saved
token, the inbox row marked processed) join that transaction through ``also``. Effects that
reach outside the store (queries, resubmits, event delivery) are started only after commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from statemachine import (
    ConfirmByQuery,
    Decision,
    EmitEvent,
    OrderEvent,
    OrderFacts,
    OrderState,
    RecordAnomaly,
    RefundEvent,
    RefundFacts,
    RefundState,
    Resubmit,
    StartNextRefund,
    decide,
    decide_refund,
    refundable,
)

from .bootstrap import Runtime
from .crashpoints import crash_point
from .metrics import ANOMALIES, DECISIONS, TRANSITIONS
from .store import repo
from .store.apply import Stale, Target, apply
from .store.db import read, write
from .store.records import OrderRecord, RefundRecord
from .store.schema import orders, refunds

log = structlog.get_logger("worker.transition")
MAX_STALE_RETRIES = 5
ORDER_TERMINAL = frozenset({"SUCCESS", "FAILED", "CLOSED"})
REFUND_TERMINAL = frozenset({"REFUND_SUCCESS", "REFUND_FAILED"})

Also = Callable[[Connection, Any, Decision[Any]], None]


@dataclass(frozen=True, slots=True)
class Applied:
    decision: Decision[Any]
    record: Any  # the record as it was read (before the decision)


def order_facts(order: OrderRecord) -> OrderFacts:
    return OrderFacts(state=OrderState(order.state), amount=order.amount, currency=order.currency,
                      app_id=order.app_id, merchant_no=order.merchant_no, user_id=order.user_id,
                      tokenize=order.tokenize, created_at=order.created_at, last_submit_at=order.last_submit_at)


def refund_facts(refund: RefundRecord, out_trade_no: str) -> RefundFacts:
    return RefundFacts(state=RefundState(refund.state), amount=refund.amount, currency=refund.currency,
                       out_trade_no=out_trade_no, created_at=refund.created_at,
                       last_submit_at=refund.last_submit_at)


def poll_updates(rt: Runtime, decision: Decision[Any], terminal: frozenset[str]) -> dict[str, Any]:
    if decision.to_state is None:
        if any(isinstance(e, ConfirmByQuery) for e in decision.effects):  # the query owed outlives a crash
            return {"next_poll_at": rt.clock() + timedelta(seconds=rt.timers.confirm_delay)}
        return {}
    if str(decision.to_state) in terminal:
        return {"next_poll_at": None}
    return {"next_poll_at": rt.clock() + rt.timers.ladder(0), "poll_count": 0}


Prepared = tuple[Any, Decision[Any], Target]  # (record as read, decision, where to write it)


def _change(rt: Runtime, lock_id: int, entity: str, terminal: frozenset[str],
            prepare: Callable[[Connection], Prepared | None], *, source: str, evidence: dict[str, Any],
            updates: dict[str, Any] | None, also: Also | None) -> Applied | None:
    """Lock, then read–decide–write in one transaction, again from the top if the record moved."""
    with rt.locks.hold(lock_id):
        crash_point("after_lock")
        for _ in range(MAX_STALE_RETRIES):
            try:
                with write(rt.engine) as conn:
                    prepared = prepare(conn)
                    if prepared is None:
                        return None
                    record, decision, target = prepared
                    changes = {**poll_updates(rt, decision, terminal), **(updates or {})}
                    apply(conn, target, decision, source=source, evidence=evidence, now=rt.clock(),
                          updates=changes)
                    if also is not None:
                        also(conn, record, decision)
                    crash_point("after_outbox")
            except Stale:
                continue
            crash_point("after_commit")
            log_decision(decision, entity, target.ref, source)
            after_commit(rt, entity, target.id, lock_id, decision)
            return Applied(decision, record)
    raise Stale(f"{entity} under order {lock_id} kept changing")


def change_order(rt: Runtime, order_id: int, event: Callable[[OrderRecord], OrderEvent], *, source: str,
                 evidence: dict[str, Any], updates: dict[str, Any] | None = None, also: Also | None = None,
                 ) -> Applied | None:
    """Decide ``event`` for the order and write it; None when the order does not exist."""
    def prepare(conn: Connection) -> Prepared | None:
        order = repo.get_order(conn, order_id)
        if order is None:
            return None
        decision = decide(order_facts(order), event(order), now=rt.clock(), **rt.timers.not_found)
        return order, decision, Target(entity="order", id=order.id, ref=order.out_trade_no, version=order.version,
                                       event_fields=order_event_fields(order))

    return _change(rt, order_id, "order", ORDER_TERMINAL, prepare, source=source, evidence=evidence,
                   updates=updates, also=also)


def change_refund(rt: Runtime, refund_id: int, order_id: int, event: Callable[[RefundRecord], RefundEvent], *,
                  source: str, evidence: dict[str, Any], updates: dict[str, Any] | None = None,
                  also: Also | None = None) -> Applied | None:
    """Decide ``event`` for the refund (under its order's lock: refund sums are per order) and write it."""
    def prepare(conn: Connection) -> Prepared | None:
        refund, order = repo.get_refund(conn, refund_id), repo.get_order(conn, order_id)
        if refund is None or order is None:
            return None
        others = [r for r in repo.refunds_of(conn, order_id) if r.id != refund.id]
        after = refundable(order.amount, [*repo.refund_pairs(others), (RefundState.REFUND_SUCCESS, refund.amount)])
        decision = decide_refund(refund_facts(refund, order.out_trade_no), event(refund), now=rt.clock(),
                                 refundable_if_applied=after, **rt.timers.not_found)
        return refund, decision, Target(entity="refund", id=refund.id, ref=refund.out_refund_no,
                                        version=refund.version, event_fields=refund_event_fields(refund, order))

    return _change(rt, order_id, "refund", REFUND_TERMINAL, prepare, source=source, evidence=evidence,
                   updates=updates, also=also)


def order_event_fields(order: OrderRecord) -> dict[str, Any]:
    return {"out_trade_no": order.out_trade_no, "amount": str(order.amount), "currency": order.currency,
            "user_id": order.user_id}


def refund_event_fields(refund: RefundRecord, order: OrderRecord) -> dict[str, Any]:
    return {"out_refund_no": refund.out_refund_no, "out_trade_no": order.out_trade_no,
            "amount": str(refund.amount), "currency": refund.currency}


def log_decision(decision: Decision[Any], entity: str, ref: str, source: str) -> None:
    DECISIONS.labels(entity, str(decision.outcome)).inc()
    if decision.to_state is not None:
        TRANSITIONS.labels(entity, str(decision.from_state), str(decision.to_state), source).inc()
    for effect in decision.effects:
        if isinstance(effect, RecordAnomaly):
            ANOMALIES.labels(str(effect.kind)).inc()
    log.info(f"{entity}.decided", ref=ref, outcome=str(decision.outcome), trigger=decision.trigger,
             from_state=str(decision.from_state), to_state=str(decision.to_state) if decision.to_state else None,
             source=source)


def after_commit(rt: Runtime, entity: str, record_id: int, order_id: int, decision: Decision[Any]) -> None:
    """Start the effects that reach outside the store. Each is idempotent; losing one is healed
    by the scheduler (due polls, waiting refunds, undelivered events)."""
    for effect in decision.effects:
        if isinstance(effect, ConfirmByQuery):
            delay = timedelta(seconds=rt.timers.confirm_delay)
            if entity == "order":
                rt.enqueuer.poll_order(record_id, delay=delay)
            else:
                rt.enqueuer.poll_refund(record_id, delay=delay)
        elif isinstance(effect, Resubmit):
            if entity == "order":
                rt.enqueuer.resubmit_order(record_id)
            else:
                rt.enqueuer.submit_refund(record_id)
        elif isinstance(effect, StartNextRefund):
            start_next_refund(rt, order_id)
    if rt.event_sinks and any(isinstance(e, EmitEvent) for e in decision.effects):
        rt.enqueuer.deliver_events()


def start_next_refund(rt: Runtime, order_id: int) -> None:
    """Submit the oldest waiting refund of the order, if none is in progress."""
    from statemachine import may_submit

    with read(rt.engine) as conn:
        waiting = repo.refunds_of(conn, order_id)
    if not may_submit(repo.refund_pairs(waiting)):
        return
    for refund in waiting:
        if refund.state == "CREATED":
            rt.enqueuer.submit_refund(refund.id)
            return


__all__ = ["Applied", "change_order", "change_refund", "orders", "refunds"]
