"""How long a finished job stays in Redis: a named job's id must be free again at once, a wake-up's
job (an id of its own, never asked for twice) may linger for a few seconds, then goes.

Why it matters: the scheduler and the sweeper heal lost work by asking for a named job again
(``poll-order-7``); were its finished record kept, asking again would replace it, one more fetch and
delete per request. A wake-up's job is left to expire because deleting it at success is rq's
costliest step of a job that has nothing else to do (measured in the README's performance section).
"""

from __future__ import annotations

import redis as redis_lib
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from worker.runtime.queueing import Enqueuer, make_queue

NOOP = f"{__name__}.noop"


def noop(*_args: object) -> None:
    """The job body: what it does is not under test, only what rq keeps of it afterwards."""


def _run_queue(connection: redis_lib.Redis) -> None:
    queue = make_queue(connection)
    SimpleWorker([queue], connection=connection, serializer=JSONSerializer).work(burst=True)


def test_a_named_job_is_gone_once_it_finished_so_asking_again_enqueues_it(redis_url: str) -> None:
    connection = redis_lib.Redis.from_url(redis_url)
    connection.flushdb()
    enqueuer = Enqueuer(make_queue(connection))
    job_id = enqueuer.submit(NOOP, 7, job_id="poll-order-7")
    _run_queue(connection)

    assert not connection.exists(f"rq:job:{job_id}"), "a finished named job was kept"
    enqueuer.submit(NOOP, 7, job_id="poll-order-7")
    assert make_queue(connection).job_ids == ["poll-order-7"]


def test_a_wake_up_job_finishes_and_expires_within_seconds(redis_url: str) -> None:
    connection = redis_lib.Redis.from_url(redis_url)
    connection.flushdb()
    enqueuer = Enqueuer(make_queue(connection))
    job_id = enqueuer.start_woken("apply-shard-3", NOOP, 3)
    _run_queue(connection)

    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    ttl = connection.ttl(f"rq:job:{job_id}")
    assert 0 < ttl <= 10, f"a finished wake-up job should expire within seconds, its TTL is {ttl}"
    assert enqueuer.start_woken("apply-shard-3", NOOP, 3) != job_id, "each wake-up is a job of its own"
