"""A job record that says "pending" while nothing will ever run it must not block the work it names.

The ``Enqueuer`` deduplicates by job id: asking again for a job whose record says queued, started,
scheduled or deferred is a no-op. The scheduler and the sweeper heal lost work by asking again, so a
record left saying "queued" with its id in no queue strands the record it works on for good (found
through the Hypothesis model, issue 4; see tests/reliability/test_regressions.py). rq leaves exactly
that when a worker dies between its ``LPOP`` and marking the job started: on Redis < 6.2, or with a
worker listening on more than one queue, rq dequeues with ``LPOP`` instead of ``LMOVE`` into its
intermediate queue, so nothing is left for rq's own maintenance to recover.

The fix belongs in ``worker/queueing.py`` (``Enqueuer._replace_if_done``: a "queued" job that is in no
queue, like a "started" one in no started registry, is lost and may be replaced). Until it lands this
test is a strict expected failure: it turns red the day the Enqueuer heals orphans, so the marker goes.
"""

from __future__ import annotations

import pytest
import redis as redis_lib
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from worker.queueing import Enqueuer, make_queue


@pytest.mark.xfail(strict=True, reason="worker/queueing.py trusts a job record's status; reported, not fixed here")
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
