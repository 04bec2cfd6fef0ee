"""The rq worker with the product's settings.

``SimpleWorker`` (jobs run in the worker process) is the default: on this kind of machine it
runs about three times as many jobs per second as rq's forking ``Worker`` (≈111 vs ≈37 no-op
jobs/s per process, see the performance notes), and every job here is short and idempotent.
``--fork`` selects the forking worker, which isolates each job in a child process.
Both use the JSON serializer (a pickled job is refused), one queue, a built-in scheduler for
delayed retries, and short heartbeats so a dead worker's jobs come back within about a minute
(measured: 63 s with ``--fork``; 120 s for a ``SimpleWorker``, whose heartbeat is the job timeout + 60 s).
"""

from __future__ import annotations

import contextlib
import time

import structlog
from redis.exceptions import RedisError
from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from worker.runtime import Runtime
from worker.runtime.queueing import make_queue

log = structlog.get_logger("worker.rqworker")
WORKER_TTL = 30
JOB_MONITORING_INTERVAL = 5
MAINTENANCE_INTERVAL = 15
REDIS_WAIT_MAX = 2.0  # seconds between pings while Redis is away


def build_worker(rt: Runtime, *, fork: bool = False, name: str | None = None) -> BaseWorker:
    cls: type[BaseWorker] = Worker if fork else SimpleWorker
    return cls(
        [make_queue(rt.redis)], connection=rt.redis, serializer=JSONSerializer, name=name,
        worker_ttl=WORKER_TTL, job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL, log_job_description=False,
    )


def run_worker(rt: Runtime, *, fork: bool = False, burst: bool = False) -> bool:
    """Work until stopped (with ``burst``, until the queue is empty).

    rq's work loop gives up when Redis fails in the middle of a job (its teardown then raises too),
    which would end the process on any Redis outage. Unless a stop was requested, a fresh rq worker
    takes over once Redis answers again; rq re-runs the interrupted job after its heartbeat expires,
    and every handler is idempotent.
    """
    worked = False
    worker: BaseWorker | None = None
    while True:
        with contextlib.suppress(RedisError):  # Redis away at start, or rq's teardown could not reach it either
            worker = build_worker(rt, fork=fork)
            worked = bool(worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")) or worked
        if burst or _stop_requested(worker) or not _await_redis(rt, worker):
            return worked
        log.warning("worker.resumed", reason="rq's work loop ended without a stop request")


def _stop_requested(worker: BaseWorker | None) -> bool:
    return getattr(worker, "_shutdown_requested_date", None) is not None  # set by rq's SIGTERM/SIGINT handler


def _await_redis(rt: Runtime, worker: BaseWorker | None) -> bool:
    """Wait until Redis answers (at least a second, so a broken loop never spins); False on a stop."""
    delay = 1.0
    while True:
        try:
            time.sleep(delay)
            if _stop_requested(worker):
                return False
            rt.redis.ping()
            return True
        except StopRequested:  # rq's signal handler, still installed, raises it while we wait
            return False
        except RedisError:
            delay = min(delay * 2, REDIS_WAIT_MAX)
