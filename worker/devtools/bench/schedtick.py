"""The scheduler's tick with many pending orders: it must cost O(due), not O(pending).

Why PostgreSQL, always, in a scratch database of its own: the target is stated for 1,000,000
pending orders in PostgreSQL, and a million rows would slow every other phase if they shared
the stack's store. Why ``Scheduler.tick()`` in this process, against Redis database 1: the tick
is the unit the target is about; its poll jobs land in a database no worker reads, so nothing
calls the simulator for orders it never saw.

Each timed tick first makes ``due`` random orders due (the rest stay pending, polls spread over
the next day), so every tick finds work and pushes it out by the claim period, as in production.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis import Redis

from worker.config import Settings
from worker.devtools.bench.seed import make_due, seed_orders
from worker.devtools.bench.stack import APP_ID, MERCHANT_NO, scratch_postgres
from worker.runtime import Runtime, Timers
from worker.scheduler import Scheduler
from worker.store.db import create_engine
from worker.store.migrate import upgrade

PREFIX = "SCHED"
TICKS = 7


@dataclass(kw_only=True)
class TickResult:
    pending: int
    due: int
    seed_seconds: float
    ticks_ms: list[float]
    enqueued: list[int]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ticks_ms)

    @property
    def max_ms(self) -> float:
        return max(self.ticks_ms)

    @property
    def seed_rate(self) -> float:
        return self.pending / self.seed_seconds if self.seed_seconds > 0 else 0.0


def scheduler_tick(*, admin_url: str, redis_url: str, pending: int, due: int, rng: random.Random,
                   progress: Callable[[float], None]) -> TickResult:
    """Seed ``pending`` orders in a scratch database, then time ``TICKS`` ticks with ``due`` due each."""
    tick_redis_url = redis_url.rsplit("/", 1)[0] + "/1"
    with scratch_postgres(admin_url, "sched") as url:
        engine = create_engine(url)
        try:
            upgrade(engine)
            now = datetime.now(UTC)
            started = time.perf_counter()
            seed_orders(engine, prefix=PREFIX, first=0, count=pending, now=now, poll_at=now + timedelta(hours=1),
                        spread_seconds=86_400)
            seed_seconds = time.perf_counter() - started
            progress(1)
            settings = Settings.from_env({"DATABASE_URL": url, "REDIS_URL": tick_redis_url, "CHECUS_APP_ID": APP_ID,
                                          "CHECUS_MERCHANT_NO": MERCHANT_NO,
                                          "CHECUS_GATEWAY_URL": "http://127.0.0.1:9"})
            redis = Redis.from_url(tick_redis_url)
            rt = Runtime(settings=settings, engine=engine, redis=redis, timers=Timers())
            scheduler = Scheduler(rt)
            ticks, enqueued = [], []
            for i in range(TICKS):
                make_due(engine, prefix=PREFIX, indices=rng.sample(range(pending), min(due, pending)),
                         now=datetime.now(UTC))
                started = time.perf_counter()
                report = scheduler.tick()
                ticks.append((time.perf_counter() - started) * 1000)
                enqueued.append(report.orders)
                progress(2 + i)
            redis.flushdb()
            redis.close()
        finally:
            engine.dispose()
    return TickResult(pending=pending, due=due, seed_seconds=seed_seconds, ticks_ms=ticks, enqueued=enqueued)
