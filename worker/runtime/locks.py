"""Per-order Redis locks: an efficiency measure, never the source of correctness.

A lock keeps two workers from querying and deciding the same order at once. It is redis-py's
``Lock`` (a ``SET NX PX`` with an owner token, released by a compare-and-delete script) with a
TTL, never blocking: a busy lock raises ``LockBusy`` so the job is retried later and the worker
moves on. A lock lost to its TTL is logged, not raised: the store's compare-and-set has
already kept the data right. Network calls are made outside the lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from redis import Redis
from redis.exceptions import LockError

from worker.metrics import LOCKS_LOST

log = structlog.get_logger("worker.runtime.locks")


SCHEDULER_LEASE_KEY = "checus:scheduler:leader"  # held by the one scheduler that acts (worker.scheduler)


def _key(order_id: int) -> str:
    return f"checus:lock:order:{order_id}"


class LockBusy(Exception):
    """Another worker holds the lock: retry the job later (rq's Retry does)."""


class OrderLocks:
    def __init__(self, redis: Redis, *, ttl: float = 10.0) -> None:
        self.redis = redis
        self.ttl = ttl

    def remaining(self, order_id: int) -> float:
        """Seconds until the lock on ``order_id`` runs out by itself (0 when it is free).

        A holder that died keeps its lock this long; whoever found it busy comes back then.
        """
        millis = int(self.redis.pttl(_key(order_id)))
        return max(millis, 0) / 1000

    @contextmanager
    def hold(self, order_id: int) -> Iterator[None]:
        lock = self.redis.lock(_key(order_id), timeout=self.ttl, blocking=False)
        if not lock.acquire(blocking=False):
            raise LockBusy(f"order {order_id} is locked")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("lock.lost", order_id=order_id, ttl=self.ttl)
                LOCKS_LOST.inc()
