"""``checus-worker scheduler``: due polls from SQL, and the sweeper that brings lost work back.

The poll schedule lives in SQL (``next_poll_at``), so it survives a Redis loss. Any number
of schedulers may run; one leader at a time (a Redis lease, renewed every tick) does the
work. Each tick:

- enqueues a poll for every non-terminal order and refund whose ``next_poll_at`` is due
  (an index range scan: the cost follows the number due, not the number pending), and
  pushes ``next_poll_at`` out by a claim period so a lost job is simply enqueued again later;
- sweeps: inbox rows no job finished (never enqueued, lost with a crashed worker, or deferred
  and due) are enqueued again; undelivered events get a delivery job; rq's registry of
  started jobs is cleaned so jobs of a dead worker are retried without waiting for rq's own
  ten-minute maintenance.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import structlog
from redis.exceptions import LockError, RedisError
from rq.registry import StartedJobRegistry

from worker.runtime import Runtime
from worker.runtime.locks import SCHEDULER_LEASE_KEY
from worker.store import inbox, outbox, repo
from worker.store.db import write
from worker.store.schema import orders, refunds

log = structlog.get_logger("worker.scheduler")
LEASE_KEY = SCHEDULER_LEASE_KEY


@dataclass(frozen=True, slots=True)
class TickReport:
    leader: bool
    orders: int = 0
    refunds: int = 0
    inbox: int = 0
    events: int = 0


class Scheduler:
    def __init__(self, rt: Runtime, *, batch: int = 500, lease_seconds: float = 15.0,
                 sweep_every: float = 5.0) -> None:
        self.rt = rt
        self.batch = batch
        self.lease = rt.redis.lock(LEASE_KEY, timeout=lease_seconds, blocking=False)
        self.sweep_every = sweep_every
        self._last_sweep = 0.0

    def is_leader(self) -> bool:
        try:
            if self.lease.owned():
                self.lease.reacquire()
                return True
            return bool(self.lease.acquire(blocking=False))
        except (LockError, RedisError):
            return False

    def tick(self) -> TickReport:
        if not self.is_leader():
            return TickReport(leader=False)
        now = self.rt.clock()
        claim = now + timedelta(seconds=self.rt.timers.poll_claim)
        with write(self.rt.engine) as conn:
            # Terminal records too: one with a poll due owes a confirming query (see transition.poll_updates).
            due_orders = repo.due_polls(conn, orders, (), now=now, limit=self.batch)
            due_refunds = repo.due_polls(conn, refunds, (), now=now, limit=self.batch)
        for order_id in due_orders:
            self.rt.enqueuer.poll_order(order_id)
        for refund_id in due_refunds:
            self.rt.enqueuer.poll_refund(refund_id)
        with write(self.rt.engine) as conn:
            for table, ids in ((orders, due_orders), (refunds, due_refunds)):
                if ids:
                    # Only rows still due: a poll that already ran keeps the next poll it decided.
                    conn.execute(table.update().where(table.c.id.in_(ids), table.c.next_poll_at <= now)
                                 .values(next_poll_at=claim))
        swept, events = self.sweep() if time.monotonic() - self._last_sweep >= self.sweep_every else (0, 0)
        return TickReport(leader=True, orders=len(due_orders), refunds=len(due_refunds), inbox=swept, events=events)

    def sweep(self) -> tuple[int, int]:
        self._last_sweep = time.monotonic()
        now = self.rt.clock()
        with write(self.rt.engine) as conn:
            lost = inbox.due(conn, now=now, older_than=timedelta(seconds=self.rt.timers.inbox_sweep_after),
                             limit=self.batch)
            undelivered = len(outbox.due(conn, now=now, limit=1)) if self.rt.event_sinks else 0
        for entry_id in lost:
            self.rt.enqueuer.apply_notification(entry_id)  # one job per row: a poison row cannot block a shard
        if undelivered:
            self.rt.enqueuer.deliver_events()
        StartedJobRegistry(queue=self.rt.enqueuer.queue).cleanup()
        if lost:
            log.info("scheduler.swept", inbox=len(lost))
        return len(lost), undelivered

    def run(self, stop: threading.Event, *, interval: float = 1.0) -> None:
        log.info("scheduler.started", interval=interval)
        while not stop.is_set():
            try:
                report = self.tick()
                if report.orders or report.refunds:
                    log.info("scheduler.tick", orders=report.orders, refunds=report.refunds)
            except RedisError as exc:
                log.warning("scheduler.redis_unavailable", error=type(exc).__name__)
            except Exception:
                log.exception("scheduler.tick_failed")
            stop.wait(interval)
        try:
            if self.lease.owned():
                self.lease.release()
        except (LockError, RedisError):
            pass
