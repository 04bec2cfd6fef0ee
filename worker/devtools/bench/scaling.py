"""Scale-out (applied rate with 1, 2, 4 … workers, and what stops it growing) and the memory soak.

Why a backlog: sent as fast as possible with workers running, notifications can be applied no
faster than the receiver acknowledges them, so each step ingests its notifications with no worker
running and then starts N workers; the applied rate is first commit → last commit of that drain.

Why the limiter is read from CPU: on one machine the applied rate stops growing for one of three
reasons, and each leaves a different trace over the drain (when only the workers run): both cores
busy (CPU), one core busy in redis-server (Redis is single-threaded), or neither, with workers
waiting (on SQLite, the single writer lock and the fsync of every commit; on PostgreSQL, commits).
Each step also measures the rq no-op floor with that many workers, so the ratio shows whether
the product's work or rq's bookkeeping dominates.

Why the soak compares RSS before and after on warm processes: the soak runs after the main
phase, so imports, caches and pools are already filled; growth past that is what a long-running
process would keep accumulating.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from worker.devtools.bench.floors import rq_noop_rate
from worker.devtools.bench.phases import Bench, NotificationPhase, notification_phase, settle

GROWTH = 1.15  # a step that adds workers but less than 15 % applied rate has stopped growing


@dataclass(kw_only=True)
class ScaleStep:
    workers: int
    phase: NotificationPhase
    noop_rate: float
    db: str

    @property
    def limit(self) -> str:
        return limiter(self.phase.cpu_drain, db=self.db)


def limiter(cpu: dict[str, float], *, db: str) -> str:
    """Which resource bounds a phase, from the cores each role used during it."""
    cores = os.cpu_count() or 1
    machine, redis, other = cpu.get("machine", 0.0), cpu.get("redis", 0.0), cpu.get("other", 0.0)
    busy = ", ".join(f"{role} {used:.2f}" for role, used in sorted(cpu.items(), key=lambda kv: -kv[1])
                     if role not in ("machine", "other") and used >= 0.05)
    noise = f"; other processes on this machine used {other:.2f} cores" if other >= 0.2 else ""
    if machine >= 0.85 * cores:
        return f"CPU: {machine:.2f} of {cores} cores busy ({busy}){noise}"
    if redis >= 0.8:
        return f"Redis: redis-server uses {redis:.2f} of its one core ({busy}){noise}"
    what = "the SQLite write lock and commit fsync" if db == "sqlite" else "SQL commits and row locks"
    return f"SQL/waits: only {machine:.2f} of {cores} cores busy, so processes wait ({what}?) ({busy}){noise}"


def scale_out(b: Bench, counts: tuple[int, ...]) -> list[ScaleStep]:
    """Per worker count: the no-op floor, then a backlog ingested with no worker running and drained
    by that many workers (so the receiver's rate does not cap what the workers can apply)."""
    steps = []
    for workers in counts:
        b.stack.start_workers(workers)
        noop = rq_noop_rate(b.stack.redis, jobs=b.options.noop_jobs, window=b.options.noop_window)
        b.stack.stop_workers()
        phase = notification_phase(b, f"scale-out x{workers}", b.take(b.options.scale_out_notifications),
                                   duplicates=0.0, rate=0.0, workers_after=workers)
        steps.append(ScaleStep(workers=workers, phase=phase, noop_rate=noop, db=b.options.db))
        settle(0.5)
    b.stack.start_workers(b.options.workers)
    return steps


def stops_growing(steps: list[ScaleStep]) -> tuple[int | None, str]:
    """The first worker count that did not add ≥ 15 % applied rate, and what limited it."""
    for previous, step in itertools.pairwise(steps):
        if step.phase.applied_rate < previous.phase.applied_rate * GROWTH:
            return step.workers, step.limit
    if steps:
        return None, f"still growing at {steps[-1].workers} workers ({steps[-1].limit})"
    return None, "not measured"


@dataclass(kw_only=True)
class Soak:
    before: dict[str, int]
    after: dict[str, int]
    phase: NotificationPhase

    @property
    def growth_pct(self) -> dict[str, float]:
        return {name: round((self.after[name] - size) / size * 100, 2)
                for name, size in self.before.items() if name in self.after and size > 0}

    @property
    def worst_python_growth(self) -> float:
        """Largest growth among the product's Python processes (Redis holds data on purpose)."""
        values = [v for name, v in self.growth_pct.items() if name != "redis"]
        return max(values) if values else 0.0


def memory_soak(b: Bench, count: int) -> Soak:
    settle(1.0)
    before = b.sampler.rss()
    phase = notification_phase(b, "memory soak", b.take(count), duplicates=b.options.duplicates, rate=0.0)
    settle(1.0)
    return Soak(before=before, after=b.sampler.rss(), phase=phase)
