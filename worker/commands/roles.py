"""The long-running process roles: ``web``, ``work``, ``scheduler``, and ``db upgrade``."""

from __future__ import annotations

import signal
import threading

import click

from ..bootstrap import process_runtime
from ..logs import configure_logging


def _setup(*, store_metrics: bool = False) -> None:
    rt = process_runtime()
    configure_logging(level=rt.settings.log_level)
    if rt.settings.metrics_port:
        from ..metrics import StoreCollector, serve_metrics
        from ..queueing import make_queue

        collector = StoreCollector(rt.engine, rt.redis, queue_key=make_queue(rt.redis).key, clock=rt.clock,
                                   age_limits=rt.settings.stuck_after) if store_metrics else None
        serve_metrics(rt.settings.metrics_port, store=collector)


@click.command()
@click.option("--host", help="Overrides CHECUS_RECEIVER_HOST.")
@click.option("--port", type=int, help="Overrides CHECUS_RECEIVER_PORT.")
def web(host: str | None, port: int | None) -> None:
    """Run the notification receiver (POST /checus/notify/payment and /checus/notify/refund)."""
    import uvicorn

    from ..web import receiver_app, server_options

    _setup(store_metrics=True)
    rt = process_runtime()
    rt.verifier  # noqa: B018 - load the platform keys now: a bad key fails at start, not on the first request
    uvicorn.run(receiver_app(rt), host=host or rt.settings.receiver_host, port=port or rt.settings.receiver_port,
                **server_options(rt.settings))


@click.command()
@click.option("--fork", is_flag=True, help="Run each job in a forked child (rq's Worker) instead of in-process.")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
def work(fork: bool, burst: bool) -> None:
    """Run an rq worker for the product's queue (JSON jobs only)."""
    from ..rqworker import run_worker

    _setup()
    run_worker(process_runtime(), fork=fork, burst=burst)


@click.command()
@click.option("--interval", default=1.0, show_default=True, help="Seconds between ticks.")
def scheduler(interval: float) -> None:
    """Enqueue due polls and sweep lost work (one leader at a time; run two for availability)."""
    from ..scheduler import Scheduler

    _setup()
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
    from ..store.migrate import current
    from ..store.migrate import upgrade as run_upgrade

    rt = process_runtime()
    run_upgrade(rt.engine)
    click.echo(f"schema at revision {current(rt.engine)}")
