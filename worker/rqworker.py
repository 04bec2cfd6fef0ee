"""The rq worker with the product's settings.

``SimpleWorker`` (jobs run in the worker process) is the default: on this kind of machine it
runs about three times as many jobs per second as rq's forking ``Worker`` (≈111 vs ≈37 no-op
jobs/s per process, see the performance notes), and every job here is short and idempotent.
``--fork`` selects the forking worker, which isolates each job in a child process.
Both use the JSON serializer (a pickled job is refused), one queue, a built-in scheduler for
delayed retries, and short heartbeats so a dead worker's jobs come back within about a minute.
"""

from __future__ import annotations

from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from .bootstrap import Runtime
from .queueing import make_queue

WORKER_TTL = 30
JOB_MONITORING_INTERVAL = 5
MAINTENANCE_INTERVAL = 15


def build_worker(rt: Runtime, *, fork: bool = False, name: str | None = None) -> BaseWorker:
    cls: type[BaseWorker] = Worker if fork else SimpleWorker
    return cls(
        [make_queue(rt.redis)], connection=rt.redis, serializer=JSONSerializer, name=name,
        worker_ttl=WORKER_TTL, job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL, log_job_description=False,
    )


def run_worker(rt: Runtime, *, fork: bool = False, burst: bool = False) -> bool:
    worker = build_worker(rt, fork=fork)
    return bool(worker.work(burst=burst, with_scheduler=True, logging_level="WARNING"))
