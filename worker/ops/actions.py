"""What an operator can do: resolve an anomaly (after a fresh query), replay a notification, reconcile.

Resolving never trusts the state that caused the anomaly: it asks Checus again first, and the
answer goes into the evidence. Only one resolution changes a state: a LATE_SUCCESS that the
fresh query confirms turns the FAILED/CLOSED order into SUCCESS, through the state machine's
operator edge, with the operator and the evidence in the audit history. Every other
resolution records who resolved it, why, and what Checus said, on the anomaly itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import simplejson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from statemachine import NOT_FOUND_CODE, ORDER_TERMINAL, REFUND_TERMINAL, Decision, OperatorResolve, OrderState
from worker.flows.notifications import save_token_from
from worker.flows.polls import poll_order, poll_refund
from worker.flows.transition import change_order
from worker.gateway import ChecusError, RecordNotFound
from worker.gateway.replies import OrderStatusReply
from worker.ops.queries import get_anomaly
from worker.runtime import Runtime
from worker.store import inbox
from worker.store.db import read, write
from worker.store.schema import anomalies, orders, refunds
from worker.store.schema import inbox as inbox_table


class OperatorError(ValueError):
    """The action cannot be taken; the message says why."""


def fresh_query(rt: Runtime, entity: str, ref: str) -> dict[str, Any]:
    """What Checus says now about an order or refund (never raises: the answer is evidence)."""
    return _fresh(rt, entity, ref)[0]


def _fresh(rt: Runtime, entity: str, ref: str) -> tuple[dict[str, Any], OrderStatusReply | None]:
    """The fresh answer as evidence, and the order's state as read (for the token it may carry)."""
    try:
        if entity == "order":
            order = rt.client.query_order(ref)
            return {"status": order.status.value, "amount": str(order.amount), "currency": order.currency}, order
        refund = rt.client.query_refund(ref)
        return {"status": refund.status.value, "amount": str(refund.amount), "currency": refund.currency}, None
    except RecordNotFound:
        return {"status": NOT_FOUND_CODE}, None
    except ChecusError as exc:
        return {"status": "UNANSWERED", "reason": exc.reason}, None


def resolve_anomaly(rt: Runtime, anomaly_id: int, *, operator: str, reason: str) -> dict[str, Any]:
    if not reason.strip() or not operator.strip():
        raise OperatorError("a resolution needs an operator and a reason")
    with read(rt.engine) as conn:
        anomaly = get_anomaly(conn, anomaly_id)
    if anomaly is None:
        raise OperatorError(f"no anomaly {anomaly_id}")
    if anomaly.resolved_at is not None:
        raise OperatorError(f"anomaly {anomaly_id} was resolved by {anomaly.resolved_by}")
    answer: dict[str, Any] = {}  # an anomaly about a kept notification (entity inbox) has nothing to ask
    state = None
    if anomaly.entity in ("order", "refund"):
        answer, state = _fresh(rt, anomaly.entity, anomaly.ref)
    evidence = {"anomaly": anomaly_id, "operator": operator, "reason": reason, "fresh_query": answer}
    resolution = reason
    if anomaly.kind == "late_success" and anomaly.entity_id is not None:
        if answer.get("status") != "SUCCESS":
            raise OperatorError(f"Checus now says {answer.get('status')}: not a confirmed late success")
        confirmed = OperatorResolve(to_state=OrderState.SUCCESS, reason=reason,
                                    has_token=state is not None and state.payment_token_id is not None)

        def save_token(conn: Connection, record: Any, decision: Decision[Any]) -> None:
            if state is not None:  # the token a late success minted is saved like any other
                save_token_from(conn, rt, record.id, state, decision)

        applied = change_order(rt, anomaly.entity_id, lambda _o: confirmed, source="operator", evidence=evidence,
                               also=save_token)
        resolution = f"{reason} (order set to SUCCESS)" if applied and applied.decision.changed else reason
    with write(rt.engine) as conn:
        conn.execute(anomalies.update().where(anomalies.c.id == anomaly_id, anomalies.c.resolved_at.is_(None))
                     .values(resolved_at=rt.clock(), resolved_by=operator[:64], resolution=resolution[:500],
                             evidence=simplejson.dumps({"original": anomaly.evidence, "resolution": evidence})))
    return {"anomaly": anomaly_id, "resolution": resolution, "fresh_query": answer}


def replay(rt: Runtime, inbox_id: int) -> str:
    """Apply a kept notification again (it is re-verified; the state machine makes a repeat harmless)."""
    with write(rt.engine) as conn:
        entry = inbox.get(conn, inbox_id)
        if entry is None:
            raise OperatorError(f"no inbox entry {inbox_id}")
        conn.execute(sa.update(inbox_table).where(inbox_table.c.id == inbox_id)
                     .values(processed_at=None, next_attempt_at=None, failures=0))
    return rt.enqueuer.apply_notification(inbox_id)


def open_records(rt: Runtime) -> list[tuple[str, int]]:
    with read(rt.engine) as conn:
        found = [("order", i) for i in conn.execute(sa.select(orders.c.id).where(
            orders.c.state.not_in(tuple(ORDER_TERMINAL))).order_by(orders.c.id)).scalars()]
        found += [("refund", i) for i in conn.execute(sa.select(refunds.c.id).where(
            refunds.c.state.not_in(tuple(REFUND_TERMINAL))).order_by(refunds.c.id)).scalars()]
    return found


def reconcile(rt: Runtime, records: list[tuple[str, int]], *, per_second: float,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[str, int, str]]:
    """Poll each record now, at most ``per_second`` gateway queries a second; yields each outcome."""
    interval = 1.0 / per_second
    for entity, record_id in records:
        started = time.monotonic()
        outcome = poll_order(rt, record_id) if entity == "order" else poll_refund(rt, record_id)  # "busy": in work
        yield entity, record_id, outcome
        sleep(max(0.0, interval - (time.monotonic() - started)))

