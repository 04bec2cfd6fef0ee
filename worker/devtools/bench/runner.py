"""One bench run from start to cleanup: setup, floors, phases, report.

Why this order: signing and seeding come first and are never timed; the RSA floor runs before
any process starts (a quiet core); the hello floor runs on the started but idle stack; the main
phase runs before anything else has filled Redis or the store; the scheduler phase runs last,
after the stack's processes stopped, so a million-row seed does not compete with them. Whatever
happens, ``finally`` ends every process group, drops scratch databases and stops Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.devtools.bench.duplicates import duplicate_phase
from worker.devtools.bench.floors import rq_noop_rate, rsa_verify_rate
from worker.devtools.bench.options import BenchOptions
from worker.devtools.bench.payloads import notification_body, sign_all
from worker.devtools.bench.phases import Bench, hello_phase, notification_phase, settle
from worker.devtools.bench.procs import Sampler
from worker.devtools.bench.render import render
from worker.devtools.bench.report import Results, document
from worker.devtools.bench.scaling import memory_soak, scale_out
from worker.devtools.bench.schedtick import TICKS, scheduler_tick
from worker.devtools.bench.seed import seed_orders
from worker.devtools.bench.stack import BenchStack

REPO = Path(__file__).resolve().parents[3]


class RichUi:
    """Progress bars on stderr, one per step."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def task(self, description: str, total: float) -> Callable[[float], None]:
        task_id = self.progress.add_task(description, total=total)

        def update(completed: float) -> None:
            self.progress.update(task_id, completed=completed)

        return update


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5, check=True)  # noqa: S603,S607
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def meta(stack: BenchStack) -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    server: dict[str, Any] = stack.redis.info("server")
    dirty = _git("status", "--porcelain")
    return {
        "schema": "checus-bench/1",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_model()},
        "versions": {"python": platform.python_version(), "rq": _version("rq"), "redis-py": _version("redis"),
                     "redis-server": server.get("redis_version"), "uvicorn": _version("uvicorn"),
                     "uvloop": _version("uvloop"), "httptools": _version("httptools"),
                     "sqlalchemy": _version("sqlalchemy"), "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip()},
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(dirty) if dirty is not None else None,
        "load_generator": "wrk + Lua, one keep-alive connection per thread, per-request records",
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so ``finally`` cleans up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_exit(*_: object) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_bench(options: BenchOptions, *, console: Console | None = None) -> dict[str, Any]:
    """Run every phase; returns the JSON document (also written to ``options.json_path``)."""
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="checus-bench-", dir=options.workdir))
    stack = BenchStack(options, run_dir)
    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    keep = options.keep
    try:
        with _terminate_as_exit(), Progress(*columns, console=err) as progress:
            results, info = _run(options, stack, run_dir, RichUi(progress))
    except BaseException:
        keep = True  # the processes' logs say why
        err.print(f"bench failed; logs and load files kept in {run_dir}")
        raise
    finally:
        stack.close()
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    doc = document(results, meta={**info, "duration_seconds": round(time.monotonic() - started, 1)})
    if options.json_path == "-":
        print(json.dumps(doc, indent=2))  # noqa: T201 - the JSON document is the command's output
    elif options.json_path:
        Path(options.json_path).write_text(json.dumps(doc, indent=2) + "\n")
    render(doc, console or (err if options.json_path == "-" else Console()))
    if options.keep:
        (console or err).print(f"run directory kept: {run_dir}")
    return doc


def _run(options: BenchOptions, stack: BenchStack, run_dir: Path, ui: RichUi) -> tuple[Results, dict[str, Any]]:
    rng = random.Random(options.seed)  # noqa: S311 - reproducible plans, nothing secret
    prefix = f"BENCH{uuid.uuid4().hex[:6].upper()}-"
    total = options.total_orders()
    now = datetime.now(UTC)
    engine = stack.open_store()
    seed_orders(engine, prefix=prefix, first=0, count=total, now=now, poll_at=now + timedelta(days=1))
    ui.task(f"setup: seeded {total:,} PENDING orders", 1)(1)
    bodies = [notification_body(f"{prefix}{i}", now) for i in range(total)]
    signs = sign_all(stack.platform.private_key, bodies, processes=os.cpu_count() or 1, work_dir=run_dir / "signing",
                     on_progress=ui.task("setup: signing notifications", total))
    rsa = rsa_verify_rate()
    ui.task("floor: RSA-2048 verify", 1)(1)
    stack.start_processes()
    info = meta(stack)
    with Sampler(stack.supervisor) as sampler:
        b = Bench(options=options, stack=stack, run_dir=run_dir, prefix=prefix, bodies=bodies, signs=signs,
                  base_us=int(time.time() * 1e6), ui=ui, sampler=sampler, rng=rng)
        main_orders = b.take(options.notifications)
        hello = hello_phase(b, main_orders[:options.hello_requests])
        main = notification_phase(b, "main", main_orders, duplicates=options.duplicates, rate=options.rate)
        applied = sorted(main.commits_us)
        resend = [applied[i % len(applied)] for i in range(options.duplicate_requests)] if applied else main_orders[:1]
        duplicate = duplicate_phase(b, resend)
        fixed = None
        if options.latency_rate > 0:
            count = int(options.latency_rate * options.latency_seconds)
            fixed = notification_phase(b, f"fixed {options.latency_rate:g}/s", b.take(count), duplicates=0.0,
                                       rate=options.latency_rate)
        settle(0.5)
        noop_done = ui.task(f"floor: rq no-op jobs ×{options.workers} {options.worker_class}", 1)
        noop = rq_noop_rate(stack.redis, jobs=options.noop_jobs, window=options.noop_window)
        noop_done(1)
        soak = memory_soak(b, options.memory_soak) if options.memory_soak else None
        steps = scale_out(b, options.scale_out)
        peak = dict(sampler.peak)
    stack.supervisor.close()
    tick = None
    if options.scheduler_pending > 0:
        tick = scheduler_tick(admin_url=options.postgres_admin_url, redis_url=stack.redis_url,
                              pending=options.scheduler_pending, due=options.scheduler_due, rng=rng,
                              progress=ui.task(f"scheduler: seed {options.scheduler_pending:,} + ticks", TICKS + 1))
    return Results(options=options, rsa_rate=rsa, hello=hello, main=main, duplicate=duplicate, fixed=fixed,
                   noop_rate=noop, soak=soak, scale=steps, tick=tick, peak_rss=peak), info

