"""rq job entry points. Stable import paths: rq stores ``worker.jobs.<name>`` in Redis.

Each job is a thin shim: ids in (never payloads or secrets), one call into a handler with the
process's runtime, log context bound for the duration. Handlers are idempotent; rq may run a
job twice, even concurrently, and the store's compare-and-set keeps that harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from rq import get_current_job

from worker.bootstrap import process_runtime
from worker.flows import applier, events, notifications, payments, polls, refunding
from worker.metrics import JOB_SECONDS, JOBS

log = structlog.get_logger("worker.jobs")
T = TypeVar("T")


def _run(name: str, handler: Callable[[], T], **context: object) -> T:
    """Run a handler with bound log context; one canonical ``job.done`` / ``job.failed`` line each."""
    job = get_current_job()
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(job=name, job_id=job.id if job else None, **context):
        try:
            result = handler()
        except Exception as exc:
            JOBS.labels(name, "failed").inc()
            log.warning("job.failed", error=type(exc).__name__, duration_ms=_ms(started))
            raise
        finally:
            JOB_SECONDS.labels(name).observe(time.perf_counter() - started)
        JOBS.labels(name, "done").inc()
        log.info("job.done", result=result, duration_ms=_ms(started))
        return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def apply_notification(inbox_id: int) -> str:
    return _run("apply_notification", lambda: notifications.apply_notification(process_runtime(), inbox_id),
                inbox_id=inbox_id)


def apply_pending(shard: int) -> int:
    return _run("apply_pending", lambda: applier.apply_pending(process_runtime(), shard), shard=shard)


def poll_order(order_id: int) -> str:
    return _run("poll_order", lambda: polls.poll_order(process_runtime(), order_id), order_id=order_id)


def poll_refund(refund_id: int) -> str:
    return _run("poll_refund", lambda: polls.poll_refund(process_runtime(), refund_id), refund_id=refund_id)


def submit_refund(refund_id: int) -> str:
    return _run("submit_refund", lambda: refunding.submit_refund(process_runtime(), refund_id), refund_id=refund_id)


def resubmit_order(order_id: int) -> str:
    return _run("resubmit_order", lambda: payments.resubmit_order(process_runtime(), order_id), order_id=order_id)


def deliver_events() -> int:
    return _run("deliver_events", lambda: events.deliver_events(process_runtime()))
