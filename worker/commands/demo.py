"""``checus-worker demo``: the seed flows, end to end, on an embedded stack with nothing configured."""

from __future__ import annotations

import os

import click


@click.command()
@click.option("--time-scale", default=0.01, show_default=True, type=float,
              help="Scales every timer (poll ladder, notification retries) so the demo takes seconds.")
def demo(time_scale: float) -> None:
    """Run payments, token payments, 3DS, a lost notification, duplicates, refunds and token removal.

    Starts the simulator, the receiver, a worker and a scheduler on loopback with SQLite, and
    Redis from REDIS_URL or a private redis-server. Exits 0 only if every flow ended as expected.
    """
    from worker.devtools.demo.flows import run_demo
    from worker.logs import configure_logging

    configure_logging(level="WARNING")
    if not run_demo(time_scale=time_scale, redis_url=os.environ.get("REDIS_URL") or None):
        raise click.exceptions.Exit(1)
