"""Prometheus metrics: counters where things happen, gauges computed from the store at scrape time.

Process-local counters and histograms (``prometheus_client``) are incremented by the receiver,
the jobs and the gateway client; each process exposes its own (``/metrics`` on the receiver,
``CHECUS_METRICS_PORT`` for workers and schedulers). The state of the business — open
payments and refunds by state and age, stuck ones against configured limits, anomalies, queue
depth, outbox lag, unprocessed inbox rows — is read from SQL and Redis when scraped
(``StoreCollector``), so any one receiver reports the same truth and nothing drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .store.db import read
from .store.schema import anomalies, inbox, orders, outbox, refunds

if TYPE_CHECKING:
    from .bootstrap import Runtime

NOTIFICATIONS_RECEIVED = Counter("checus_notifications_received_total", "Notifications acknowledged",
                                 ["kind", "outcome"])
NOTIFICATIONS_REJECTED = Counter("checus_notifications_rejected_total", "Notifications refused", ["kind", "reason"])
TRANSITIONS = Counter("checus_transitions_total", "State changes committed", ["entity", "from_state", "to_state",
                                                                            "source"])
DECISIONS = Counter("checus_decisions_total", "Decisions taken, changing state or not", ["entity", "outcome"])
ANOMALIES = Counter("checus_anomalies_total", "Anomalies recorded", ["kind"])
GATEWAY_CALLS = Counter("checus_gateway_calls_total", "Calls to Checus", ["endpoint", "code"])
GATEWAY_LATENCY = Histogram("checus_gateway_call_seconds", "Latency of calls to Checus", ["endpoint"],
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20))
POLLS = Counter("checus_polls_total", "Status polls", ["entity", "result"])
JOBS = Counter("checus_jobs_total", "Jobs run", ["job", "status"])
JOB_SECONDS = Histogram("checus_job_seconds", "Job duration", ["job"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LOCKS_LOST = Counter("checus_locks_lost_total", "Order locks that expired before release (the CAS kept data right)")

AGE_LIMITS_SECONDS = {"CREATED": 300.0, "PENDING": 86400.0 + 3600, "UNKNOWN": 900.0, "REFUND_PENDING": 86400.0 * 3}
ORDER_TERMINAL = ("SUCCESS", "FAILED", "CLOSED")
REFUND_TERMINAL = ("REFUND_SUCCESS", "REFUND_FAILED")


class StoreCollector(Collector):
    """Business gauges read from the store and Redis at scrape time."""

    def __init__(self, engine: Engine, redis: Redis, *, queue_key: str, clock: Callable[[], datetime],
                 age_limits: dict[str, float] | None = None) -> None:
        self.engine, self.redis, self.queue_key, self.clock = engine, redis, queue_key, clock
        self.age_limits = age_limits or AGE_LIMITS_SECONDS

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._store()
        except SQLAlchemyError:
            yield GaugeMetricFamily("checus_store_up", "Whether the store answered the scrape", value=0)
        else:
            yield GaugeMetricFamily("checus_store_up", "Whether the store answered the scrape", value=1)
        try:
            depth = int(self.redis.llen(self.queue_key))
        except RedisError:
            yield GaugeMetricFamily("checus_redis_up", "Whether Redis answered the scrape", value=0)
        else:
            yield GaugeMetricFamily("checus_redis_up", "Whether Redis answered the scrape", value=1)
            yield GaugeMetricFamily("checus_queue_depth", "Jobs waiting in the queue", value=depth)

    def _store(self) -> Iterator[Metric]:
        now = self.clock()
        count = GaugeMetricFamily("checus_open_records", "Open payments and refunds", labels=["entity", "state"])
        oldest = GaugeMetricFamily("checus_open_oldest_seconds", "Age in state of the oldest open record",
                                   labels=["entity", "state"])
        stuck = GaugeMetricFamily("checus_stuck_records", "Open records older in their state than the limit",
                                  labels=["entity", "state"])
        with read(self.engine) as conn:
            for entity, table, terminal in (("order", orders, ORDER_TERMINAL), ("refund", refunds, REFUND_TERMINAL)):
                rows = conn.execute(sa.select(table.c.state, sa.func.count(), sa.func.min(table.c.updated_at))
                                    .where(table.c.state.not_in(terminal)).group_by(table.c.state)).all()
                for state, n, since in rows:
                    count.add_metric([entity, state], n)
                    oldest.add_metric([entity, state], _age(now, since))
                    limit = self.age_limits.get(state)
                    if limit is not None:
                        cutoff = now.timestamp() - limit
                        stuck.add_metric([entity, state], conn.execute(
                            sa.select(sa.func.count()).where(table.c.state == state,
                                                             table.c.updated_at < datetime.fromtimestamp(
                                                                 cutoff, now.tzinfo))).scalar_one())
            open_anomalies = conn.execute(sa.select(anomalies.c.kind, sa.func.count())
                                          .where(anomalies.c.resolved_at.is_(None)).group_by(anomalies.c.kind)).all()
            unprocessed = conn.execute(sa.select(sa.func.count()).where(inbox.c.processed_at.is_(None))).scalar_one()
            lag_since = conn.execute(sa.select(sa.func.min(outbox.c.created_at))
                                     .where(outbox.c.delivered_at.is_(None))).scalar_one()
        yield from (count, oldest, stuck)
        anomaly = GaugeMetricFamily("checus_open_anomalies", "Anomalies not resolved", labels=["kind"])
        for kind, n in open_anomalies:
            anomaly.add_metric([kind], n)
        yield anomaly
        yield GaugeMetricFamily("checus_inbox_unprocessed", "Kept notifications not yet applied", value=unprocessed)
        yield GaugeMetricFamily("checus_outbox_lag_seconds", "Age of the oldest undelivered merchant event",
                                value=_age(now, lag_since) if lag_since else 0.0)


def _age(now: datetime, since: datetime | None) -> float:
    if since is None:
        return 0.0
    if since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    return max(0.0, (now - since).total_seconds())


def serve_metrics(port: int, *, store: StoreCollector | None = None, span: int = 1) -> int:
    """Expose this process's metrics on ``port`` (internal; not the receiver's public port).

    With ``span`` > 1, the first free port of ``port .. port + span - 1``: the processes of a
    multi-process receiver each serve their own counters there. Returns the port taken.
    """
    from prometheus_client import REGISTRY, start_http_server

    if store is not None:
        REGISTRY.register(store)
    for candidate in range(port, port + span):
        try:
            start_http_server(candidate, addr="0.0.0.0")  # noqa: S104 - scraped from other hosts; keep it internal
            return candidate
        except OSError:
            if candidate == port + span - 1:
                raise
    raise ValueError("span must be at least 1")


def start_metrics(rt: Runtime, *, store: bool, span: int = 1) -> int | None:
    """Serve this process's metrics if ``CHECUS_METRICS_PORT`` is set (``store``: with the business
    gauges, which the receiver adds); returns the port, or None."""
    if not rt.settings.metrics_port:
        return None
    from .queueing import make_queue

    collector = StoreCollector(rt.engine, rt.redis, queue_key=make_queue(rt.redis).key, clock=rt.clock,
                               age_limits=rt.settings.stuck_after) if store else None
    return serve_metrics(rt.settings.metrics_port, store=collector, span=span)
