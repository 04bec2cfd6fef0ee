"""Query polls: /orderQuery and /refundQuery turned into the same decisions as notifications.

The gateway is asked *before* the lock is taken (no network call under a lock). A transport
error is never a state: an unknown outcome leaves the record as it is and only moves its
next poll further along the backoff ladder. Polls go on past ``expireTime`` until Checus
itself reports the order CLOSED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Connection

from statemachine import (
    Decision,
    GatewayNotFound,
    GatewayReport,
    OrderEvent,
    RefundEvent,
    RefundNotFound,
    RefundReport,
    Source,
    SubmitUnknown,
)

from .bootstrap import Runtime
from .crashpoints import crash_point
from .gateway import OutcomeUnknown, RecordNotFound
from .gateway.errors import GatewayRejected
from .metrics import POLLS
from .notifications import save_token_from
from .store import repo
from .store.db import read, write
from .store.schema import orders, refunds
from .transition import ORDER_TERMINAL, REFUND_TERMINAL, change_order, change_refund

log = structlog.get_logger("worker.polls")
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
                               count_poll=True)
        raise _Unanswered from None
    POLLS.labels(entity, "answered").inc()
    return answer


def _next_poll_if_open(rt: Runtime, conn: Connection, table: Any, terminal: frozenset[str], record: Any,
                       decision: Decision[Any]) -> None:
    """A poll that changed nothing moves the record one step along the backoff ladder."""
    if decision.to_state is None and str(decision.from_state) not in terminal:
        repo.schedule_poll(conn, table, record.id, rt.clock() + rt.timers.ladder(record.poll_count + 1),
                           count_poll=True)
    elif decision.to_state is None:  # a terminal record answered (e.g. a contradiction confirmed): none owed
        repo.schedule_poll(conn, table, record.id, None)


def poll_order(rt: Runtime, order_id: int) -> str:
    with read(rt.engine) as conn:
        order = repo.get_order(conn, order_id)
    if order is not None and order.state == "CREATED":  # its create call was lost with a crashed process
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
        _next_poll_if_open(rt, conn, orders, ORDER_TERMINAL, record, decision)

    updates = {"trade_token": answer.trade_token} if answer and answer.trade_token and not order.trade_token else None
    applied = change_order(rt, order.id, lambda _o: event, source="poll", evidence=evidence, updates=updates,
                           also=also)
    return str(applied.decision.outcome) if applied else "missing"


def poll_refund(rt: Runtime, refund_id: int) -> str:
    with read(rt.engine) as conn:
        refund = repo.get_refund(conn, refund_id)
    if refund is None:
        return "missing"
    if refund.state == "CREATED":
        rt.enqueuer.submit_refund(refund.id)  # never sent yet: nothing to ask the gateway
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
        _next_poll_if_open(rt, conn, refunds, REFUND_TERMINAL, record, decision)

    applied = change_refund(rt, refund.id, refund.order_id, lambda _r: event, source="poll", evidence=evidence,
                            also=also)
    return str(applied.decision.outcome) if applied else "missing"
