"""Prometheus metrics: counters where things happen, gauges computed from the store at scrape time.

Process-local counters and histograms (``prometheus_client``) are incremented by the receiver,
the jobs and the gateway client; each process exposes its own (``/metrics`` on the receiver,
``CHECUS_METRICS_PORT`` and up, or a role's own ``CHECUS_METRICS_PORT_<ROLE>``). The state of the business — open
payments and refunds by state and age, stuck ones against configured limits, anomalies, queue
depth, outbox lag, unprocessed inbox rows — is read from SQL and Redis when scraped
(``worker.ops.gauges.StoreCollector``), so any one receiver reports the same truth and nothing drifts.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

NOTIFICATIONS_RECEIVED = Counter("checus_notifications_received_total", "Notifications acknowledged",
                                 ["kind", "outcome"])
NOTIFICATIONS_REJECTED = Counter("checus_notifications_rejected_total", "Notifications refused", ["kind", "reason"])
TRANSITIONS = Counter("checus_transitions_total", "State changes committed", ["entity", "from_state", "to_state",
                                                                            "source"])
DECISIONS = Counter("checus_decisions_total", "Decisions taken, changing state or not", ["entity", "outcome"])
NOTIFICATIONS_DEFERRED = Counter("checus_notifications_deferred_total",
                                 "Kept notifications a worker could not verify or parse yet (retried later)",
                                 ["kind", "reason"])
ANOMALIES = Counter("checus_anomalies_total", "Anomalies opened (counted at commit)", ["kind"])
GATEWAY_CALLS = Counter("checus_gateway_calls_total", "Calls to Checus", ["endpoint", "code"])
GATEWAY_LATENCY = Histogram("checus_gateway_call_seconds", "Latency of calls to Checus", ["endpoint"],
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20))
POLLS = Counter("checus_polls_total", "Status polls", ["entity", "result"])
JOBS = Counter("checus_jobs_total", "Jobs run", ["job", "status"])
JOB_SECONDS = Histogram("checus_job_seconds", "Job duration", ["job"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
INBOX_WRITER_RESTARTS = Counter("checus_inbox_writer_restarts_total",
                                "Receiver inbox writer threads restarted after their loop died")
LOCKS_LOST = Counter("checus_locks_lost_total", "Order locks that expired before release (the CAS kept data right)")

SEARCH_SPAN = 100  # without a role's own port, a process takes the first free one of this many


def serve_metrics(port: int, *, store: Collector | None = None, span: int = 1) -> int:
    """Expose this process's metrics on the first free port of ``port .. port + span - 1``
    (internal; not the receiver's public port). Returns the port taken.

    Processes that share one host's settings (honcho's ``.env``, a systemd environment file) each
    find their own: the processes of a multi-process receiver, a worker beside a scheduler.
    """
    from prometheus_client import REGISTRY, start_http_server

    if span < 1:
        raise ValueError("span must be at least 1")
    if store is not None:
        REGISTRY.register(store)
    for candidate in range(port, port + span):
        try:
            start_http_server(candidate, addr="0.0.0.0")  # noqa: S104 - scraped from other hosts; keep it internal
            return candidate
        except OSError:
            if candidate == port + span - 1:
                raise
    raise AssertionError("unreachable")
