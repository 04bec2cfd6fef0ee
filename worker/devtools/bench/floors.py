"""Two of the three floors: rq's no-op job rate and RSA-2048 verifies per second (hello is in ``phases``).

Why floors measured in the same run: absolute rates drift between machines and runs, ratios
measured side by side do not (see the performance notes). The rq floor uses the stack's own
worker processes (same class, same count, same Redis), fed jobs that do nothing, so the ratio
applied-rate / no-op-rate says how much of the workers' time the product's own work takes.

The no-op rate is read over a window while a backlog remains, so neither the enqueueing nor
the tail of the queue is counted; whatever is left is dropped from the queue afterwards.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from worker.devtools.bench.payloads import notification_body
from worker.gateway.signing import Signer, Verifier, generate_portal_key_pair
from worker.runtime.queueing import make_queue

NOOP_PATH = "worker.devtools.bench.floors.noop"
ENQUEUE_BATCH = 100


def noop() -> None:
    """The rq floor's job: nothing, so the worker's time is rq's bookkeeping alone."""


def rsa_verify_rate(seconds: float = 1.5) -> float:
    """RSA-2048 SHA256withRSA verifies per second on one core, with the product's ``Verifier``."""
    pair = generate_portal_key_pair()
    body = notification_body("BENCHFLOOR1", datetime.now(UTC))
    sign = Signer.from_value(pair.private_key, setting="bench").sign(body)
    verifier = Verifier.from_values([pair.public_key], setting="bench")
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            if not verifier.verify(body, sign):
                raise RuntimeError("the floor's own signature did not verify")
        done += 100
    return done / (time.perf_counter() - started)


def _backlog(queue: Queue) -> int:
    return int(queue.count) + int(StartedJobRegistry(queue=queue).count)


def _wait_idle(queue: Queue, limit: float) -> None:
    deadline = time.monotonic() + limit
    while _backlog(queue) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def rq_noop_rate(redis: Redis, *, jobs: int, window: float, idle_limit: float = 30.0) -> float:
    """No-op jobs per second the running workers complete, read over ``window`` seconds of backlog."""
    queue = make_queue(redis)
    _wait_idle(queue, idle_limit)  # leftovers of an earlier phase would be counted as no-ops
    run = uuid.uuid4().hex[:8]
    datas = [Queue.prepare_data(NOOP_PATH, job_id=f"bench-noop-{run}-{i}", result_ttl=0, failure_ttl=60,
                                description="bench no-op") for i in range(jobs)]
    for i in range(0, len(datas), ENQUEUE_BATCH):
        queue.enqueue_many(datas[i:i + ENQUEUE_BATCH])
    first_left, first_at = int(queue.count), time.perf_counter()
    left, at = first_left, first_at
    while time.perf_counter() - first_at < window:
        time.sleep(0.05)
        left, at = int(queue.count), time.perf_counter()
        if left == 0:
            break
    rate = (first_left - left) / (at - first_at) if at > first_at else 0.0
    queue.empty()  # type: ignore[no-untyped-call]
    _wait_idle(queue, idle_limit)
    return rate
