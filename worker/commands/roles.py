"""The long-running process roles: ``web``, ``work``, ``scheduler``, and ``db upgrade``."""

from __future__ import annotations

import os
import signal
import threading

import click

from worker.bootstrap import process_runtime, role_runtime
from worker.logs import configure_logging


def _setup(role: str) -> None:
    """Logs and metrics of a worker or scheduler (the receiver's processes: ``web.serving_app``)."""
    from worker.ops.gauges import start_metrics
    from worker.runtime.startup import wait_for_redis, wait_for_schema

    rt = role_runtime(role)
    configure_logging(level=rt.settings.log_level)
    wait_for_redis(rt.redis)
    wait_for_schema(rt.engine)
    start_metrics(rt, role=role, store=False)


@click.command()
@click.option("--host", help="Overrides CHECUS_RECEIVER_HOST.")
@click.option("--port", type=int, help="Overrides CHECUS_RECEIVER_PORT.")
@click.option("--processes", type=click.IntRange(min=1), help="Overrides CHECUS_RECEIVER_PROCESSES.")
def web(host: str | None, port: int | None, processes: int | None) -> None:
    """Run the notification receiver (POST /checus/notify/payment and /checus/notify/refund)."""
    from worker.receiver.processes import serve_receiver
    from worker.runtime.startup import wait_for_schema

    rt = role_runtime("web")
    configure_logging(level=rt.settings.log_level)
    wait_for_schema(rt.engine)  # (Redis may be down: the receiver answers 503 until it is back)
    count = processes or rt.settings.receiver_processes
    if processes:
        os.environ["CHECUS_RECEIVER_PROCESSES"] = str(count)  # several processes read their settings from it
    serve_receiver(rt, host=host or rt.settings.receiver_host, port=port or rt.settings.receiver_port,
                   processes=count)


@click.command()
@click.option("--fork", is_flag=True, help="Run each job in a forked child (rq's Worker) instead of in-process.")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
def work(fork: bool, burst: bool) -> None:
    """Run an rq worker for the product's queue (JSON jobs only)."""
    from worker import jobs  # noqa: F401 - before the freeze: the first job would import it
    from worker.rqworker import run_worker
    from worker.runtime import freeze_startup_heap

    _setup("work")
    freeze_startup_heap()
    run_worker(process_runtime(), fork=fork, burst=burst)


@click.command()
@click.option("--interval", default=1.0, show_default=True, help="Seconds between ticks.")
def scheduler(interval: float) -> None:
    """Enqueue due polls and sweep lost work (one leader at a time; run two for availability)."""
    from worker.scheduler import Scheduler

    _setup("scheduler")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Scheduler(process_runtime()).run(stop, interval=interval)


@click.group()
def db() -> None:
    """The store's schema."""


@db.command()
def upgrade() -> None:
    """Apply every migration (safe to run on every deploy)."""
    from worker.store.migrate import current
    from worker.store.migrate import upgrade as run_upgrade

    rt = process_runtime()
    run_upgrade(rt.engine)
    click.echo(f"schema at revision {current(rt.engine)}")
