"""rq job entry points. Stable import paths: rq stores ``worker.jobs.<name>`` in Redis.

Each job is a thin shim: ids in (never payloads or secrets), one call into a handler with the
process's runtime, log context bound for the duration. Handlers are idempotent; rq may run a
job twice, even concurrently, and the store's compare-and-set keeps that harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog
from rq import get_current_job

from . import events, notifications, payments, polls, refunding
from .bootstrap import process_runtime

log = structlog.get_logger("worker.jobs")
T = TypeVar("T")


def _run(name: str, handler: Callable[[], T], **context: object) -> T:
    job = get_current_job()
    with structlog.contextvars.bound_contextvars(job=name, job_id=job.id if job else None, **context):
        result = handler()
        log.info("job.done", result=result)
        return result


def apply_notification(inbox_id: int) -> str:
    return _run("apply_notification", lambda: notifications.apply_notification(process_runtime(), inbox_id),
                inbox_id=inbox_id)


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
