"""Enqueueing rq jobs: JSON only, stable job ids, retries on, nothing secret in the arguments.

A job is named for what it works on (``apply-inbox-42``, ``poll-order-7``) and enqueued
with ``unique=True``: asking twice for the same pending work is a no-op. When a job with
that id exists but is finished or failed, it is replaced, so the sweeper can always bring
lost work back. Arguments are ids only; the job loads everything else from the store.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

QUEUE_NAME = "checus"
JOB_TIMEOUT = 60
RESULT_TTL = 0  # a finished job is deleted at once, so its id can be used again
FAILURE_TTL = 7 * 24 * 3600  # keep failures for a week, not rq's default year
RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
WAKE_TTL_SECONDS = 60  # a wake-up whose enqueue was lost (Redis died mid-way) blocks the next one this long
APPLY_PENDING = "worker.jobs.apply_pending"


def wake_key(name: str) -> str:
    return f"checus:wake:{name}"


def apply_wake_name(shard: int) -> str:
    return f"apply-shard-{shard}"


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
        status = job.get_status(refresh=True)
        if status in _PENDING and not (status == JobStatus.QUEUED and self._orphaned(job_id)):
            return False
        job.delete()
        return True

    def _orphaned(self, job_id: str) -> bool:
        """A "queued" job in neither the queue nor rq's intermediate queue will never run.

        rq leaves exactly that when a worker dies between dequeuing a job and marking it started
        where it dequeues with a plain LPOP (Redis < 6.2, several queues per worker). Trusting
        such a record would make every later request for the work a no-op, stranding the record
        it works on. Replacing it is safe even in the instant a live worker holds the job between
        its dequeue and its start: every job of the product is idempotent (compare-and-set).
        """
        redis = self.queue.connection
        return all(redis.lpos(key, job_id) is None
                   for key in (self.queue.key, self.queue.intermediate_queue_key))

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

    # -- wake-ups: one pending job per piece of work, however many times it is asked for ------

    def wake(self, name: str, func: str, *args: int | str) -> str | None:
        """Make sure a job running ``func`` starts after now, enqueueing one only if none is pending.

        Under load this costs one Redis round trip (a ``SET NX`` that finds the flag set) instead of
        an rq enqueue (~20 round trips) per request. The job clears the flag when it *starts*
        (``woken``), before it looks for work: anything recorded after that sets the flag again and
        gets a job of its own, so nothing recorded is left without a job that will see it.
        """
        if not self.queue.connection.set(wake_key(name), 1, nx=True, ex=WAKE_TTL_SECONDS):
            return None
        return self.start_woken(name, func, *args)

    def start_woken(self, name: str, func: str, *args: int | str) -> str:
        """Enqueue the job of a wake-up whose flag the caller has just set.

        If the enqueue fails, the flag is dropped (best effort) so that the next request enqueues
        instead of trusting a job that does not exist; the caller's failure is raised.
        """
        try:
            return self.submit(func, *args, job_id=f"{name}-{uuid.uuid4().hex[:16]}")
        except RedisError:
            with contextlib.suppress(RedisError):
                self.queue.connection.delete(wake_key(name))
            raise

    def woken(self, name: str) -> None:
        self.queue.connection.delete(wake_key(name))

    def apply_pending(self, shard: int) -> str | None:
        return self.wake(apply_wake_name(shard), APPLY_PENDING, shard)

    def start_apply_pending(self, shard: int) -> str:
        """``apply_pending`` for a caller that has set the shard's wake flag itself (the receiver)."""
        return self.start_woken(apply_wake_name(shard), APPLY_PENDING, shard)

    def deliver_events(self) -> str | None:
        return self.wake("deliver-events", "worker.jobs.deliver_events")
