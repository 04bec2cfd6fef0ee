"""Query polls: /orderQuery and /refundQuery turned into the same decisions as notifications.

The gateway is asked *before* the lock is taken (no network call under a lock). A transport
error is never a state: an unknown outcome leaves the record as it is and only moves its
next poll further along the backoff ladder. Polls go on past ``expireTime`` until Checus
itself reports the order CLOSED.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
from .gateway.replies import OrderState, RefundState
from .metrics import POLLS
from .notifications import save_token_from
from .store import repo
from .store.db import read, write
from .store.schema import orders, refunds
from .transition import ORDER_TERMINAL, REFUND_TERMINAL, change_order, change_refund

log = structlog.get_logger("worker.polls")


def _backoff(rt: Runtime, table: Any, record_id: int, poll_count: int) -> None:
    with write(rt.engine) as conn:
        repo.schedule_poll(conn, table, record_id, rt.clock() + rt.timers.ladder(poll_count + 1), count_poll=True)


def poll_order(rt: Runtime, order_id: int) -> str:
    with read(rt.engine) as conn:
        order = repo.get_order(conn, order_id)
    if order is None:
        return "missing"
    if order.state == "CREATED":  # its create call was lost with a crashed process: outcome unknown
        change_order(rt, order.id, lambda _o: SubmitUnknown(), source="poll", evidence={"stale": "CREATED"})
        with read(rt.engine) as conn:
            order = repo.get_order(conn, order_id)
        if order is None:
            return "missing"
    try:
        answer: OrderState | None = rt.client.query_order(order.out_trade_no)
        crash_point("after_gateway_call")
    except RecordNotFound:
        answer = None
    except (OutcomeUnknown, GatewayRejected) as exc:
        log.warning("poll.unanswered", out_trade_no=order.out_trade_no, reason=exc.reason)
        _backoff(rt, orders, order.id, order.poll_count)
        POLLS.labels("order", exc.reason).inc()
        return "unanswered"
    event: OrderEvent
    if answer is None:
        event, evidence = GatewayNotFound(), {"query": "ORDER_NOT_EXIST"}
    else:
        event = GatewayReport(status=answer.status.value, amount=answer.amount, currency=answer.currency,
                              source=Source.POLL, has_token=answer.payment_token_id is not None)
        evidence = {"query": answer.status.value, "trade_token": answer.trade_token or ""}
    state = answer

    def also(conn: Connection, record: Any, decision: Decision[Any]) -> None:
        if state is not None:
            save_token_from(conn, rt, record.id, state, decision)
        if decision.to_state is None and str(decision.from_state) not in ORDER_TERMINAL:
            step = record.poll_count + 1
            repo.schedule_poll(conn, orders, record.id, rt.clock() + rt.timers.ladder(step), count_poll=True)

    updates = {"trade_token": answer.trade_token} if answer and answer.trade_token and not order.trade_token else None
    POLLS.labels("order", "answered" if answer else "not_found").inc()
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
        answer: RefundState | None = rt.client.query_refund(refund.out_refund_no)
        crash_point("after_gateway_call")
    except RecordNotFound:
        answer = None
    except (OutcomeUnknown, GatewayRejected) as exc:
        log.warning("poll.unanswered", out_refund_no=refund.out_refund_no, reason=exc.reason)
        _backoff(rt, refunds, refund.id, refund.poll_count)
        POLLS.labels("refund", exc.reason).inc()
        return "unanswered"
    event: RefundEvent
    if answer is None:
        event, evidence = RefundNotFound(), {"query": "ORDER_NOT_EXIST"}
    else:
        event = RefundReport(status=answer.status.value, amount=answer.amount, currency=answer.currency,
                             source=Source.POLL)
        evidence = {"query": answer.status.value, "refund_trade_no": answer.refund_trade_no or ""}

    def also(conn: Connection, record: Any, decision: Decision[Any]) -> None:
        if decision.to_state is None and str(decision.from_state) not in REFUND_TERMINAL:
            step = record.poll_count + 1
            repo.schedule_poll(conn, refunds, record.id, rt.clock() + rt.timers.ladder(step), count_poll=True)

    POLLS.labels("refund", "answered" if answer else "not_found").inc()
    applied = change_refund(rt, refund.id, refund.order_id, lambda _r: event, source="poll", evidence=evidence,
                            also=also)
    return str(applied.decision.outcome) if applied else "missing"


def first_poll_delay(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.timers.first_poll)
