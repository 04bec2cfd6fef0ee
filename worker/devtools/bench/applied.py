"""What the store says was applied: committed transitions, counted while the load runs, timed after.

Why read the store and not the workers' logs or jobs: the applied rate is transitions committed
per second, whatever jobs carried them (how notifications are batched into jobs is the product's
business and changes). Every committed PENDING → SUCCESS writes one ``transitions`` row with the
worker's commit-time clock in ``at``; rows newer than a mark taken before a phase are that
phase's. Counting by ``id > mark`` is a primary-key range scan, cheap enough to poll twice a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.db import read
from worker.store.schema import inbox, orders, transitions

POLL_SECONDS = 0.5


def transition_mark(engine: Engine) -> int:
    with read(engine) as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(transitions.c.id), 0))).scalar_one())


def _applied(mark: int) -> sa.ColumnElement[bool]:
    return sa.and_(transitions.c.id > mark, transitions.c.entity == "order", transitions.c.to_state == "SUCCESS")


def applied_since(engine: Engine, mark: int) -> int:
    with read(engine) as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(_applied(mark))).scalar_one())


def commit_times(engine: Engine, mark: int) -> dict[str, datetime]:
    """``outTradeNo`` → when its SUCCESS was committed, for transitions after ``mark``."""
    query = (sa.select(orders.c.out_trade_no, transitions.c.at)
             .join(orders, orders.c.id == transitions.c.entity_id).where(_applied(mark)))
    with read(engine) as conn:
        return {row.out_trade_no: row.at for row in conn.execute(query)}


def inbox_rows(engine: Engine) -> int:
    with read(engine) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())


def wait_applied(engine: Engine, mark: int, expected: int, *, stall_seconds: float, limit_seconds: float,
                 on_progress: Callable[[int], None] | None = None) -> int:
    """Poll until ``expected`` transitions are committed, nothing moved for ``stall_seconds``, or
    ``limit_seconds`` passed; returns the count reached."""
    deadline = time.monotonic() + limit_seconds
    count, last_change = -1, time.monotonic()
    while True:
        now_count = applied_since(engine, mark)
        if now_count != count:
            count, last_change = now_count, time.monotonic()
            if on_progress is not None:
                on_progress(count)
        if count >= expected or time.monotonic() > deadline or time.monotonic() - last_change > stall_seconds:
            return count
        time.sleep(POLL_SECONDS)


class AppliedWatcher:
    """Counts applied transitions on a thread while the load runs (the progress bar's second number)."""

    def __init__(self, engine: Engine, mark: int, on_progress: Callable[[int], None]) -> None:
        self.engine, self.mark, self.on_progress = engine, mark, on_progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-applied", daemon=True)

    def __enter__(self) -> AppliedWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.on_progress(applied_since(self.engine, self.mark))
            except sa.exc.SQLAlchemyError:
                continue  # a busy store only delays the progress bar
