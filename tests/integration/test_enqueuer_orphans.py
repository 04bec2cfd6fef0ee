"""A job record that says "pending" while nothing will ever run it must not block the work it names.

The ``Enqueuer`` deduplicates by job id: asking again for a job whose record says queued, started,
scheduled or deferred is a no-op. The scheduler and the sweeper heal lost work by asking again, so a
record left saying "queued" with its id in no queue strands the record it works on for good (found
through the Hypothesis model, issue 4; see tests/reliability/test_regressions.py). rq leaves exactly
that when a worker dies between its ``LPOP`` and marking the job started: on Redis < 6.2, or with a
worker listening on more than one queue, rq dequeues with ``LPOP`` instead of ``LMOVE`` into its
intermediate queue, so nothing is left for rq's own maintenance to recover.

``Enqueuer._replace_if_done`` treats a "queued" job that is in neither the queue nor rq's intermediate
queue as lost, and replaces it.
"""

from __future__ import annotations

import redis as redis_lib
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from worker.runtime.queueing import Enqueuer, make_queue


def test_a_job_lost_between_dequeue_and_start_is_enqueued_again(redis_url: str) -> None:
    connection = redis_lib.Redis.from_url(redis_url)
    queue = make_queue(connection)
    enqueuer = Enqueuer(queue)
    job_id = enqueuer.submit_refund(7)
    assert queue.job_ids == [job_id]
    assert connection.lpop(queue.key) == job_id.encode()  # the worker's LPOP, then kill -9 before it starts
    lost = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    assert lost.get_status(refresh=True) == JobStatus.QUEUED and queue.job_ids == []

    enqueuer.submit_refund(7)  # the poll of a CREATED refund asks for its submit again

    assert queue.job_ids == [job_id], "the refund's submit is never run again: the record is stranded"


def test_a_queued_job_still_in_its_queue_is_not_enqueued_twice(redis_url: str) -> None:
    """The ordinary case stays a no-op: the same work asked for twice is one job."""
    connection = redis_lib.Redis.from_url(redis_url)
    queue = make_queue(connection)
    connection.delete(queue.key, queue.intermediate_queue_key)
    enqueuer = Enqueuer(queue)
    assert enqueuer.submit_refund(8) == enqueuer.submit_refund(8)
    assert queue.job_ids == ["submit-refund-8"]


def test_a_job_a_worker_holds_in_the_intermediate_queue_is_not_replaced(redis_url: str) -> None:
    """Dequeued with LMOVE (rq on Redis >= 6.2) and not yet started: rq's own maintenance recovers it."""
    connection = redis_lib.Redis.from_url(redis_url)
    queue = make_queue(connection)
    connection.delete(queue.key, queue.intermediate_queue_key)
    enqueuer = Enqueuer(queue)
    job_id = enqueuer.submit_refund(9)
    assert connection.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT") == job_id.encode()
    enqueuer.submit_refund(9)
    assert queue.job_ids == []
    assert connection.lrange(queue.intermediate_queue_key, 0, -1) == [job_id.encode()]
    connection.delete(queue.intermediate_queue_key)
