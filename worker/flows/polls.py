"""Query polls: /orderQuery and /refundQuery turned into the same decisions as notifications.

A poll takes the record's Redis lock *before* it asks, never after: two workers do not query the
same record at once (the lock saves that effort), and a poll that finds the lock busy has asked
nothing: its due poll in SQL is moved to the moment the lock runs out, so a holder that died
mid-query (kill -9) delays the next question by at most the lock's TTL. Recording the answer
never depends on the lock: the compare-and-set alone decides (``transition``).

A transport error is never a state: an unknown outcome leaves the record as it is and only moves
its next poll further along the backoff ladder. Polls go on past ``expireTime`` until Checus
itself reports the order CLOSED. An UNKNOWN record Checus has not heard of is asked again when
its grace runs out, so a lost create or refund is sent again (or settled) in bounded time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Connection

from statemachine import (
    ORDER_TERMINAL,
    REFUND_TERMINAL,
    Decision,
    GatewayNotFound,
    GatewayReport,
    OrderEvent,
    OrderState,
    RefundEvent,
    RefundNotFound,
    RefundReport,
    RefundState,
    Source,
    SubmitUnknown,
)
from worker.flows.notifications import save_token_from
from worker.flows.transition import change_order, change_refund
from worker.gateway import OutcomeUnknown, RecordNotFound
from worker.gateway.errors import GatewayRejected
from worker.metrics import POLLS
from worker.runtime import Runtime
from worker.runtime.crashpoints import crash_point
from worker.runtime.locks import LockBusy
from worker.store import repo
from worker.store.db import read, write
from worker.store.schema import orders, refunds

log = structlog.get_logger("worker.flows.polls")
T = TypeVar("T")


class _Unanswered(Exception):
    """The gateway gave no usable answer: the record keeps its state; its next poll backs off."""


def _ask(rt: Runtime, entity: str, table: Any, record: Any, ref: str, query: Callable[[str], T]) -> T | None:
    """The gateway's answer, None for ORDER_NOT_EXIST; ``_Unanswered`` (after backing off) otherwise."""
    try:
        answer = query(ref)
        crash_point("after_gateway_call")
    except RecordNotFound:
        POLLS.labels(entity, "not_found").inc()
        return None
    except (OutcomeUnknown, GatewayRejected) as exc:
        log.warning("poll.unanswered", entity=entity, ref=ref, reason=exc.reason)
        POLLS.labels(entity, exc.reason).inc()
        with write(rt.engine) as conn:
            repo.schedule_poll(conn, table, record.id, rt.clock() + rt.timers.ladder(record.poll_count + 1),
                               count_poll=True, version=record.version)
        raise _Unanswered from None
    POLLS.labels(entity, "answered").inc()
    return answer


def _next_poll(rt: Runtime, conn: Connection, table: Any, terminal: frozenset[Any], record: Any,
               decision: Decision[Any]) -> None:
    """A poll that changed nothing: an UNKNOWN record not found within its grace is asked again as
    the grace runs out (then it is sent again, or settled); any other open record moves one step
    along the ladder; a terminal one (a contradiction confirmed, say) is owed no more polls."""
    if decision.to_state is not None:
        return
    grace_end = _grace_end(rt, record)
    if str(decision.from_state) in terminal:
        repo.schedule_poll(conn, table, record.id, None)
    elif decision.from_state in (OrderState.UNKNOWN, RefundState.UNKNOWN) and rt.clock() < grace_end:
        repo.schedule_poll(conn, table, record.id, grace_end + timedelta(seconds=rt.timers.confirm_delay),
                           count_poll=True)
    else:
        repo.schedule_poll(conn, table, record.id, rt.clock() + rt.timers.ladder(record.poll_count + 1),
                           count_poll=True)


def _grace_end(rt: Runtime, record: Any) -> datetime:
    sent: datetime = record.last_submit_at or record.created_at
    return sent + timedelta(seconds=rt.timers.not_found_grace)


def poll_order(rt: Runtime, order_id: int) -> str:
    try:
        with rt.locks.hold(order_id):
            crash_point("after_lock")
            return _poll_order(rt, order_id)
    except LockBusy:
        return _come_back(rt, "order", orders, order_id, order_id)


def _come_back(rt: Runtime, entity: str, table: Any, record_id: int, lock_id: int) -> str:
    """Another job holds the lock (or a dead one's lock has not run out): poll again as it runs out."""
    at = rt.clock() + timedelta(seconds=rt.locks.remaining(lock_id) + 0.05)
    with write(rt.engine) as conn:
        repo.schedule_poll(conn, table, record_id, at)
    POLLS.labels(entity, "busy").inc()
    return "busy"


def _poll_order(rt: Runtime, order_id: int) -> str:
    with read(rt.engine) as conn:
        order = repo.get_order(conn, order_id)
    if order is not None and order.state == OrderState.CREATED:
        if order.ledger.sends > 0:  # Checus never heard of it: a resend is due
            rt.enqueuer.resubmit_order(order.id)
            return "resubmit_due"
        # Never claimed (stored by a version that sent without claiming): its outcome is unknown.
        change_order(rt, order.id, lambda _o: SubmitUnknown(), source="poll", evidence={"stale": "CREATED"})
        with read(rt.engine) as conn:
            order = repo.get_order(conn, order_id)
    if order is None:
        return "missing"
    try:
        answer = _ask(rt, "order", orders, order, order.out_trade_no, rt.client.query_order)
    except _Unanswered:
        return "unanswered"
    event: OrderEvent
    if answer is None:
        event, evidence = GatewayNotFound(), {"query": "ORDER_NOT_EXIST"}
    else:
        event = GatewayReport(status=answer.status.value, amount=answer.amount, currency=answer.currency,
                              source=Source.POLL, has_token=answer.payment_token_id is not None)
        evidence = {"query": answer.status.value, "trade_token": answer.trade_token or ""}

    def also(conn: Connection, record: Any, decision: Decision[Any]) -> None:
        if answer is not None:
            save_token_from(conn, rt, record.id, answer, decision)
        _next_poll(rt, conn, orders, ORDER_TERMINAL, record, decision)

    updates = {"trade_token": answer.trade_token} if answer and answer.trade_token and not order.trade_token else None
    applied = change_order(rt, order.id, lambda _o: event, source="poll", evidence=evidence, updates=updates,
                           also=also)
    return str(applied.decision.outcome) if applied else "missing"


def poll_refund(rt: Runtime, refund_id: int) -> str:
    with read(rt.engine) as conn:
        refund = repo.get_refund(conn, refund_id)
    if refund is None:
        return "missing"
    try:
        with rt.locks.hold(refund.order_id):  # refunds take their order's lock: their sums are per order
            crash_point("after_lock")
            return _poll_refund(rt, refund_id)
    except LockBusy:
        return _come_back(rt, "refund", refunds, refund_id, refund.order_id)


def _poll_refund(rt: Runtime, refund_id: int) -> str:
    with read(rt.engine) as conn:
        refund = repo.get_refund(conn, refund_id)
    if refund is None:
        return "missing"
    if refund.state == RefundState.CREATED:
        rt.enqueuer.submit_refund(refund.id)  # never sent, or waiting to be sent again: nothing to ask
        return "not_submitted"
    try:
        answer = _ask(rt, "refund", refunds, refund, refund.out_refund_no, rt.client.query_refund)
    except _Unanswered:
        return "unanswered"
    event: RefundEvent
    if answer is None:
        event, evidence = RefundNotFound(), {"query": "ORDER_NOT_EXIST"}
    else:
        event = RefundReport(status=answer.status.value, amount=answer.amount, currency=answer.currency,
                             source=Source.POLL)
        evidence = {"query": answer.status.value, "refund_trade_no": answer.refund_trade_no or ""}

    def also(conn: Connection, record: Any, decision: Decision[Any]) -> None:
        _next_poll(rt, conn, refunds, REFUND_TERMINAL, record, decision)

    applied = change_refund(rt, refund.id, refund.order_id, lambda _r: event, source="poll", evidence=evidence,
                            also=also)
    return str(applied.decision.outcome) if applied else "missing"
