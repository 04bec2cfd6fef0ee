"""What a bench run does: every knob of ``checus-worker bench``, and the full and short presets.

Why presets: the full run answers the issue's targets (20,000 notifications, 1,000,000 pending
orders for the scheduler, 100,000 for the memory soak) and takes several minutes; the short
run (``--short``) exercises every phase with small counts in about a minute, so CI prints the
same figures on every commit without asserting thresholds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    db: Literal["sqlite", "postgresql"] = "sqlite"
    database_url: str | None = None  # PostgreSQL to use as is; default: a scratch database on the admin server
    postgres_admin_url: str = DEFAULT_POSTGRES_ADMIN_URL
    workers: int = 1  # build_options: 1 on SQLite (one writer: a second worker adds contention), 2 on PostgreSQL
    web_processes: int = 2  # the receiver's processes (CHECUS_RECEIVER_PROCESSES), and the hello floor's
    worker_class: Literal["simple", "fork"] = "simple"
    notifications: int = 20_000  # distinct notifications in the main (as fast as possible) phase
    duplicates: float = 0.2  # share of extra requests that repeat an earlier notification
    concurrency: int = 50  # connections (one per wrk thread)
    rate: float = 0.0  # main phase arrival rate; 0 = as fast as possible
    latency_rate: float = 200.0  # the fixed-rate phase ("p99 at 200/s"); 0 skips it
    latency_seconds: float = 15.0
    duplicate_requests: int = 5_000  # already-acknowledged notifications sent in the duplicate-cost phase
    scale_out: tuple[int, ...] = (1, 2, 4)
    scale_out_notifications: int = 6_000
    noop_jobs: int = 3_000  # rq no-op floor: jobs enqueued (the rate is read over a window)
    noop_window: float = 5.0
    hello_requests: int = 20_000
    scheduler_pending: int = 1_000_000  # 0 skips the scheduler phase (always PostgreSQL)
    scheduler_due: int = 20
    memory_soak: int = 100_000  # 0 skips it
    log_level: str = "INFO"  # the processes' LOG_LEVEL: production logs every acknowledgement
    json_path: str | None = None  # a file, or "-" for stdout
    workdir: Path | None = None
    keep: bool = False
    short: bool = False
    seed: int = 7

    @property
    def fork(self) -> bool:
        return self.worker_class == "fork"

    def total_orders(self) -> int:
        """Every PENDING order any phase needs; seeded once, before anything is timed."""
        fixed = int(self.latency_rate * self.latency_seconds) if self.latency_rate > 0 else 0
        return (self.notifications + fixed + self.scale_out_notifications * len(self.scale_out)
                + self.memory_soak)

    def as_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["workdir"] = str(self.workdir) if self.workdir else None
        values["scale_out"] = list(self.scale_out)
        if self.database_url:
            values["database_url"] = "<given>"
        return values


SHORT = {
    "notifications": 800, "latency_seconds": 2.0, "duplicate_requests": 500, "scale_out": (1, 2),
    "scale_out_notifications": 300, "noop_jobs": 400, "noop_window": 1.5, "hello_requests": 3_000,
    "scheduler_pending": 10_000, "scheduler_due": 10, "memory_soak": 800, "concurrency": 20,
}


def build_options(*, short: bool, **given: Any) -> BenchOptions:
    """The preset (full or short) with every explicitly given option on top (``None`` = not given)."""
    values: dict[str, Any] = dict(SHORT) if short else {}
    values.update({k: v for k, v in given.items() if v is not None})
    values.setdefault("workers", 1 if values.get("db", "sqlite") == "sqlite" else 2)
    options = BenchOptions(short=short, **values)
    validate(options)
    return options


def validate(options: BenchOptions) -> None:
    problems = []
    if options.workers < 1 or options.web_processes < 1 or any(n < 1 for n in options.scale_out):
        problems.append("worker counts must be at least 1")
    if not 0 <= options.duplicates < 1:
        problems.append("--duplicates must be in [0, 1)")
    if options.notifications < 10:
        problems.append("--notifications must be at least 10")
    if options.concurrency < 1 or options.concurrency > 512:
        problems.append("--concurrency must be in 1..512")
    if options.rate < 0 or options.latency_rate < 0:
        problems.append("rates cannot be negative")
    if options.db == "postgresql" and not (options.database_url or options.postgres_admin_url):
        problems.append("--db postgresql needs --database-url or --postgres-admin-url")
    if problems:
        raise ValueError("; ".join(problems))
