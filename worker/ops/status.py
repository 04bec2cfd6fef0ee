"""A snapshot of the system for operators: queue, workers, open records by age, anomalies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from statemachine import ORDER_TERMINAL, REFUND_TERMINAL
from worker.runtime import Runtime
from worker.store.db import read
from worker.store.schema import anomalies, inbox, orders, outbox, refunds

AGE_BUCKETS = ((60, "<1m"), (900, "<15m"), (3600, "<1h"), (86400, "<1d"))


def _bucket(age_seconds: float) -> str:
    return next((label for limit, label in AGE_BUCKETS if age_seconds < limit), ">=1d")


def _open_by_age(conn: sa.Connection, table: sa.Table, terminal: tuple[str, ...], now: datetime) -> dict[str, Any]:
    rows = conn.execute(sa.select(table.c.state, table.c.updated_at).where(table.c.state.not_in(terminal)))
    result: dict[str, dict[str, int]] = {}
    for state, updated in rows:
        by_age = result.setdefault(state, {})
        label = _bucket((now - updated).total_seconds())
        by_age[label] = by_age.get(label, 0) + 1
    return result


def snapshot(rt: Runtime) -> dict[str, Any]:
    now = rt.clock()
    queue = rt.enqueuer.queue
    with read(rt.engine) as conn:
        open_orders = _open_by_age(conn, orders, tuple(ORDER_TERMINAL), now)
        open_refunds = _open_by_age(conn, refunds, tuple(REFUND_TERMINAL), now)
        open_anomalies = conn.execute(sa.select(anomalies.c.kind, sa.func.count()).where(
            anomalies.c.resolved_at.is_(None)).group_by(anomalies.c.kind)).all()
        unprocessed = conn.execute(sa.select(sa.func.count()).where(inbox.c.processed_at.is_(None))).scalar_one()
        undelivered = conn.execute(sa.select(sa.func.count()).where(outbox.c.delivered_at.is_(None))).scalar_one()
    return {
        "queue": {"name": queue.name, "queued": queue.count,
                  "started": StartedJobRegistry(queue=queue).count,
                  "scheduled": ScheduledJobRegistry(queue=queue).count,  # type: ignore[no-untyped-call]
                  "failed": FailedJobRegistry(queue=queue).count},
        "workers": [{"name": w.name, "state": w.get_state()} for w in Worker.all(connection=rt.redis)],
        "open_orders": open_orders,
        "open_refunds": open_refunds,
        "anomalies": {kind: count for kind, count in open_anomalies},
        "inbox_unprocessed": unprocessed,
        "events_undelivered": undelivered,
    }
