"""The business gauges, read from the store and Redis at scrape time, and a process's metrics endpoint.

Counters live in ``worker.metrics``; these gauges are computed afresh at each scrape from SQL and
Redis, so any one receiver reports the same truth and nothing drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.serializers import JSONSerializer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from statemachine import ORDER_TERMINAL, REFUND_TERMINAL
from worker.config import SettingsError
from worker.metrics import SEARCH_SPAN, serve_metrics
from worker.runtime import Runtime
from worker.runtime.locks import SCHEDULER_LEASE_KEY
from worker.runtime.queueing import make_queue
from worker.store.db import read
from worker.store.schema import anomalies, inbox, orders, outbox, refunds

log = structlog.get_logger("worker.metrics")
AGE_LIMITS_SECONDS = {"CREATED": 300.0, "PENDING": 86400.0 + 3600, "UNKNOWN": 900.0, "REFUND_PENDING": 86400.0 * 3}


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
            yield from self._liveness()

    def _liveness(self) -> Iterator[Metric]:
        """Live rq workers (a dead one's registration expires with its heartbeat) and the scheduler lease."""
        try:
            workers = len(Worker.all(connection=self.redis, serializer=JSONSerializer))
            lease = bool(self.redis.exists(SCHEDULER_LEASE_KEY))
        except RedisError:
            return
        yield GaugeMetricFamily("checus_workers", "rq workers registered (a dead one drops out with its heartbeat)",
                                value=workers)
        yield GaugeMetricFamily("checus_scheduler_lease_held", "1 while a scheduler holds the leader lease",
                                value=int(lease))

    def _store(self) -> Iterator[Metric]:
        now = self.clock()
        count = GaugeMetricFamily("checus_open_records", "Open payments and refunds", labels=["entity", "state"])
        oldest = GaugeMetricFamily("checus_open_oldest_seconds", "Age in state of the oldest open record",
                                   labels=["entity", "state"])
        stuck = GaugeMetricFamily("checus_stuck_records", "Open records older in their state than the limit",
                                  labels=["entity", "state"])
        with read(self.engine) as conn:
            for entity, table, terminal in (("order", orders, tuple(ORDER_TERMINAL)),
                                            ("refund", refunds, tuple(REFUND_TERMINAL))):
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
        since = since.replace(tzinfo=UTC)
    return max(0.0, (now - since).total_seconds())


def start_metrics(rt: Runtime, *, role: str, store: bool, span: int = 1) -> int | None:
    """Serve this process's metrics (``store``: with the business gauges, which the receiver adds);
    returns the port, or None when no metrics port is configured.

    ``CHECUS_METRICS_PORT_<ROLE>`` is the role's own port (``span`` ports for a multi-process
    receiver); otherwise the first free port from ``CHECUS_METRICS_PORT`` up, so every role of one
    host finds its own (a container has one process: it gets the base port). The port is logged.
    """
    own = rt.settings.role_metrics_ports.get(role)
    base = own or rt.settings.metrics_port
    if not base:
        return None
    collector = StoreCollector(rt.engine, rt.redis, queue_key=make_queue(rt.redis).key, clock=rt.clock,
                               age_limits=rt.settings.stuck_after) if store else None
    try:
        port = serve_metrics(base, store=collector, span=span if own else max(span, SEARCH_SPAN))
    except OSError as exc:
        raise SettingsError(f"CHECUS_METRICS_PORT_{role.upper()}" if own else "CHECUS_METRICS_PORT",
                            f"no free port from {base} ({exc.strerror})") from None
    log.info("metrics.serving", role=role, port=port)
    return port
