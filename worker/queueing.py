"""Enqueueing rq jobs: JSON only, stable job ids, retries on, nothing secret in the arguments.

A job is named for what it works on (``apply-inbox-42``, ``poll-order-7``) and enqueued
with ``unique=True``: asking twice for the same pending work is a no-op. When a job with
that id exists but is finished or failed, it is replaced, so the sweeper can always bring
lost work back. Arguments are ids only; the job loads everything else from the store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

QUEUE_NAME = "checus"
JOB_TIMEOUT = 60
RESULT_TTL = 0  # a finished job is deleted at once, so its id can be used again
FAILURE_TTL = 7 * 24 * 3600  # keep failures for a week, not rq's default year
RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
_PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def make_queue(redis: Redis, name: str = QUEUE_NAME) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT)


class Enqueuer:
    """The only way the product puts work on rq."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def submit(self, func: str, *args: int | str, job_id: str,
               delay: timedelta | None = None) -> str:
        """Enqueue once per ``job_id``; returns the id. Raises redis errors to the caller."""
        options: dict[str, Any] = {
            "job_id": job_id, "retry": RETRY, "result_ttl": RESULT_TTL, "failure_ttl": FAILURE_TTL,
            "description": job_id,
        }
        if delay is not None and delay.total_seconds() > 0:
            if self._replace_if_done(job_id):  # scheduling over a pending job would clobber it
                self.queue.enqueue_in(delay, func, *args, **options)
            return job_id
        for _ in range(2):
            try:
                self.queue.enqueue(func, *args, unique=True, **options)
                return job_id
            except DuplicateJobError:
                if not self._replace_if_done(job_id):
                    return job_id
        return job_id

    def _replace_if_done(self, job_id: str) -> bool:
        """True when a finished or failed job of that id was removed, so it can be enqueued again."""
        try:
            job = Job.fetch(job_id, connection=self.queue.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return True
        if job.get_status(refresh=True) in _PENDING:
            return False
        job.delete()
        return True

    # -- the product's jobs, by stable import path (worker.jobs) -------------------------

    def apply_notification(self, inbox_id: int, *, delay: timedelta | None = None) -> str:
        return self.submit("worker.jobs.apply_notification", inbox_id, job_id=f"apply-inbox-{inbox_id}", delay=delay)

    def poll_order(self, order_id: int, *, delay: timedelta | None = None) -> str:
        return self.submit("worker.jobs.poll_order", order_id, job_id=f"poll-order-{order_id}", delay=delay)

    def poll_refund(self, refund_id: int, *, delay: timedelta | None = None) -> str:
        return self.submit("worker.jobs.poll_refund", refund_id, job_id=f"poll-refund-{refund_id}", delay=delay)

    def submit_refund(self, refund_id: int, *, delay: timedelta | None = None) -> str:
        return self.submit("worker.jobs.submit_refund", refund_id, job_id=f"submit-refund-{refund_id}", delay=delay)

    def resubmit_order(self, order_id: int) -> str:
        return self.submit("worker.jobs.resubmit_order", order_id, job_id=f"resubmit-order-{order_id}")

    def deliver_events(self) -> str:
        return self.submit("worker.jobs.deliver_events", job_id="deliver-events")
