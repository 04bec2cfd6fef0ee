"""The load phases: notifications at full speed or a fixed rate, the hello floor, and duplicates.

Why every phase goes through the same path (plan → wrk → wait for the store): the ingest figures
come from wrk's per-request records, the applied figures from the store's committed transitions,
and the two meet on ``outTradeNo`` for the notification→commit latency (commit ``at`` minus the
moment the ack reached the client, both ``CLOCK_REALTIME``). The CPU each process used is kept
per phase, split into the load (ingest and apply together) and the drain (apply alone).
"""

from __future__ import annotations

import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Protocol

from redis import Redis
from rq import Worker

from worker.devtools.bench.applied import AppliedWatcher, commit_times, transition_mark, wait_applied
from worker.devtools.bench.loadgen import LoadResult, run_wrk, write_plan
from worker.devtools.bench.options import BenchOptions
from worker.devtools.bench.payloads import Planned, plan_requests
from worker.devtools.bench.procs import Sampler, cpu_meter, wait_http
from worker.devtools.bench.stack import BenchStack
from worker.devtools.demo.redis_server import free_port
from worker.receiver.app import PAYMENT_PATH

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STALL_SECONDS = 30.0


class Ui(Protocol):
    def task(self, description: str, total: float) -> Callable[[float], None]: ...


@dataclass(kw_only=True)
class Bench:
    """Everything a phase needs: the stack, the signed bodies, the clock base, the UI."""

    options: BenchOptions
    stack: BenchStack
    run_dir: Path
    prefix: str
    bodies: list[bytes]
    signs: list[str]
    base_us: int
    ui: Ui
    sampler: Sampler
    rng: random.Random
    next_order: int = 0

    def take(self, count: int) -> list[int]:
        """The next ``count`` seeded orders no phase has used yet."""
        first, self.next_order = self.next_order, self.next_order + count
        if self.next_order > len(self.bodies):
            raise RuntimeError("more orders used than seeded")
        return list(range(first, self.next_order))

    def order_no(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def write(self, label: str, plan: Sequence[Planned]) -> tuple[Path, int]:
        directory = self.run_dir / "load" / re.sub(r"[^A-Za-z0-9_.-]+", "-", label)
        threads = write_plan(directory, [(p.seq, self.signs[p.order], self.bodies[p.order]) for p in plan],
                             self.options.concurrency)
        return directory, threads

    def to_us(self, moment: datetime) -> int:
        return (moment - EPOCH) // timedelta(microseconds=1) - self.base_us


def time_limit(requests: int, rate: float) -> float:
    """wrk's bound: generous, since the point is to measure, not to time out (≥ 20 req/s assumed)."""
    return requests / rate * 1.5 + 30 if rate > 0 else requests / 20 + 60


PRODUCT_ROLES = frozenset({"web", "work", "scheduler", "redis", "postgres"})

@dataclass(kw_only=True)
class NotificationPhase:
    label: str
    workers: int
    plan: list[Planned]
    load: LoadResult
    expected: int
    applied: int
    commits_us: dict[int, int]  # order index → commit time (µs from base)
    backlog: bool = False  # the workers were started after the load: the applied rate is the drain's
    cpu_total: dict[str, float] = field(default_factory=dict)  # cores per role, load and drain together
    cpu_load: dict[str, float] = field(default_factory=dict)
    cpu_drain: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of ``cpu_total``
    drain_seconds: float = 0.0  # wall time of ``cpu_drain``
    jobs: int = 0  # rq jobs the workers finished during the phase (mostly the shards' apply jobs)

    @property
    def cpu_ms_per_applied(self) -> dict[str, float]:
        """Milliseconds of CPU per applied notification, per product role and in all (``product``):
        the receiver, workers, scheduler, Redis and PostgreSQL's backends (not the load generator,
        nor the simulator, which an applied notification never calls)."""
        whole, seconds = (self.cpu_drain, self.drain_seconds) if self.backlog else (self.cpu_total, self.seconds)
        if not self.applied or not seconds:
            return {}
        per = {role: round(cores * seconds * 1000 / self.applied, 3)
               for role, cores in whole.items() if role in PRODUCT_ROLES}
        per["product"] = round(sum(per.values()), 3)
        return per

    @property
    def ingest_rate(self) -> float:
        return len(self.load.ok) / self.load.span_seconds if self.load.span_seconds else 0.0

    @property
    def ingest_latencies_ms(self) -> list[float]:
        return sorted(a.latency_ms for a in self.load.ok)

    @property
    def scheduled_latencies_ms(self) -> list[float]:
        """Ack minus the scheduled send time (fixed rate); equals the service time otherwise."""
        return sorted(a.scheduled_latency_ms for a in self.load.ok)

    @property
    def applied_rate(self) -> float:
        """Committed transitions per second: first request sent → last commit (end to end), or, for a
        backlog drained by workers started after the load, first commit → last commit."""
        if len(self.commits_us) < 2 or not self.load.acks:
            return 0.0
        start = min(self.commits_us.values()) if self.backlog else self.load.acks[0].sent_us
        span = (max(self.commits_us.values()) - start) / 1e6
        return (len(self.commits_us) - (1 if self.backlog else 0)) / span if span > 0 else 0.0

    @property
    def commit_latencies_ms(self) -> list[float]:
        """Commit minus the ack of the notification's first delivery (may be < 0: commit before ack)."""
        values = []
        for ack in self.load.ok:
            planned = self.plan[ack.seq]
            committed = self.commits_us.get(planned.order)
            if not planned.duplicate and committed is not None:
                values.append((committed - ack.acked_us) / 1000)
        return sorted(values)


def notification_phase(b: Bench, label: str, orders: list[int], *, duplicates: float, rate: float,
                       workers_after: int | None = None) -> NotificationPhase:
    """Send each order's notification (plus re-sends), then wait until the store has applied them all.

    With ``workers_after``, no worker runs during the load and that many start after it: the
    applied rate is then the workers' own capacity on a backlog, not bounded by the ingest rate.
    """
    plan = plan_requests(orders, duplicates=duplicates, lag=4 * b.options.concurrency, rng=b.rng)
    directory, threads = b.write(label, plan)
    mark = transition_mark(b.stack.engine)
    acked = b.ui.task(f"{label}: acknowledged", len(plan))
    applied = b.ui.task(f"{label}: applied", len(orders))
    meter = partial(cpu_meter, b.stack.supervisor, postgres_database=b.stack.postgres_database)
    jobs_before = jobs_done(b.stack.redis)
    began = time.monotonic()
    with meter() as cpu_total:
        with meter() as cpu_load, AppliedWatcher(b.stack.engine, mark, applied):
            load = run_wrk(b.stack.receiver_url + PAYMENT_PATH, directory, threads=threads, planned=len(plan),
                           base_us=b.base_us, rate=rate, time_limit=time_limit(len(plan), rate),
                           on_progress=acked)
        acked(len(load.acks))
        if workers_after is not None:
            b.stack.start_workers(workers_after)
        drain_began = time.monotonic()
        with meter() as cpu_drain:
            count = wait_applied(b.stack.engine, mark, len(orders), stall_seconds=STALL_SECONDS,
                                 limit_seconds=max(120.0, len(orders) / 20), on_progress=applied)
    seconds = time.monotonic() - began
    drain_seconds = time.monotonic() - drain_began
    jobs = jobs_done(b.stack.redis) - jobs_before
    by_number = {b.order_no(i): i for i in orders}
    commits = {by_number[no]: b.to_us(at) for no, at in commit_times(b.stack.engine, mark).items() if no in by_number}
    b.stack.supervisor.check_alive()
    return NotificationPhase(label=label, workers=b.stack.worker_count, plan=plan, load=load, expected=len(orders),
                             applied=count, commits_us=commits, backlog=workers_after is not None,
                             cpu_total=cpu_total, cpu_load=cpu_load, cpu_drain=cpu_drain, seconds=seconds,
                             drain_seconds=drain_seconds, jobs=jobs)


def jobs_done(redis: Redis) -> int:
    """Jobs every registered worker has finished so far (rq keeps the count in each worker's hash)."""
    return sum(w.successful_job_count + w.failed_job_count for w in Worker.all(connection=redis))


def hello_phase(b: Bench, orders: list[int]) -> LoadResult:
    """The same requests, same generator and concurrency, against a do-nothing app on the same server."""
    port = free_port()
    b.stack.supervisor.start("hello", [sys.executable, "-m", "worker.devtools.bench.hello", "--port", str(port)],
                             b.stack.environment())
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", alive=b.stack.supervisor)
        plan = plan_requests(orders, duplicates=b.options.duplicates, lag=4 * b.options.concurrency, rng=b.rng)
        directory, threads = b.write("hello", plan)
        done = b.ui.task("floor: hello-world endpoint", len(plan))
        load = run_wrk(f"http://127.0.0.1:{port}{PAYMENT_PATH}", directory, threads=threads, planned=len(plan),
                       base_us=b.base_us, time_limit=time_limit(len(plan), 0), on_progress=done)
        done(len(load.acks))
        return load
    finally:
        b.stack.supervisor.stop("hello")


def settle(seconds: float) -> None:
    """Let the last phase's after-effects (event jobs, logs) finish before the next one is timed."""
    time.sleep(seconds)
