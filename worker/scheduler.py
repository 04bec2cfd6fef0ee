"""``checus-worker scheduler``: due polls from SQL, and the sweeper that brings lost work back.

The poll schedule lives in SQL (``next_poll_at``), so it survives a Redis loss. Any number
of schedulers may run; one leader at a time does the work. Who should lead is a Redis lease,
renewed every tick; who may act is decided in SQL (``worker.store.leadership``): a new leader
begins a term there, and every tick reads and claims its work in a transaction that holds the
leader row with its own term, so a leader that was partitioned or paused past its lease finds
itself fenced and does nothing, instead of acting beside its successor. Each tick:

- enqueues a poll for every non-terminal order and refund whose ``next_poll_at`` is due
  (an index range scan: the cost follows the number due, not the number pending), and
  pushes ``next_poll_at`` out by a claim period so a lost job is simply enqueued again later;
- sweeps: inbox rows no job finished (never enqueued, lost with a crashed worker, or deferred
  and due) are enqueued again; undelivered events get a delivery job; rq's registry of
  started jobs is cleaned so jobs of a dead worker are retried without waiting for rq's own
  ten-minute maintenance.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from redis.exceptions import LockError, RedisError
from rq.registry import StartedJobRegistry

from worker.runtime import Runtime
from worker.runtime.locks import SCHEDULER_LEASE_KEY
from worker.store import inbox, leadership, outbox, repo
from worker.store.db import read, write
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
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class _Work:
    orders: list[int]
    refunds: list[int]
    inbox: list[int]
    events: int
    claim: datetime


class Scheduler:
    def __init__(self, rt: Runtime, *, batch: int = 500, lease_seconds: float = 15.0,
                 sweep_every: float = 5.0) -> None:
        self.rt = rt
        self.batch = batch
        self.lease = rt.redis.lock(LEASE_KEY, timeout=lease_seconds, blocking=False)
        self.sweep_every = sweep_every
        self._last_sweep = 0.0
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.term: int | None = None  # the SQL term this process leads in, once it began one

    def is_leader(self) -> bool:
        """Hold the Redis lease (renew it, or take it if free). A lease taken anew begins a new term."""
        try:
            if self.lease.owned():
                self.lease.reacquire()
                return True
            self.term = None
            return bool(self.lease.acquire(blocking=False))
        except (LockError, RedisError):
            self.term = None
            return False

    def tick(self) -> TickReport:
        if not self.is_leader():
            return TickReport(leader=False)
        if self.term is None:
            with write(self.rt.engine) as conn:
                self.term = leadership.begin_term(conn, holder=self.holder, clock=self.rt.clock)
            log.info("scheduler.term_started", term=self.term, holder=self.holder)
        return self.act(self.term)

    def act(self, term: int) -> TickReport:
        """One tick's work in term ``term``: read and claim in one fenced transaction, then enqueue."""
        sweep = time.monotonic() - self._last_sweep >= self.sweep_every
        work = self._claim(term, sweep=sweep)
        if work is None:
            self._step_down(term)
            return TickReport(leader=False, fenced=True)
        self._enqueue(work)
        if sweep:
            StartedJobRegistry(queue=self.rt.enqueuer.queue).cleanup()
            if work.inbox:
                log.info("scheduler.swept", inbox=len(work.inbox))
        return TickReport(leader=True, orders=len(work.orders), refunds=len(work.refunds),
                          inbox=len(work.inbox), events=work.events)

    def _claim(self, term: int, *, sweep: bool) -> _Work | None:
        with write(self.rt.engine) as conn:
            if not leadership.hold(conn, term=term, clock=self.rt.clock):
                return None
            now = self.rt.clock()
            claim = now + timedelta(seconds=self.rt.timers.poll_claim)
            # Terminal records too: one with a poll due owes a confirming query (see transition.poll_updates).
            due_orders = repo.due_polls(conn, orders, (), now=now, limit=self.batch)
            due_refunds = repo.due_polls(conn, refunds, (), now=now, limit=self.batch)
            for table, ids in ((orders, due_orders), (refunds, due_refunds)):
                if ids:
                    # Claimed before enqueueing, so a poll that runs at once keeps the next poll it decides.
                    conn.execute(table.update().where(table.c.id.in_(ids), table.c.next_poll_at <= now)
                                 .values(next_poll_at=claim))
            lost: list[int] = []
            undelivered = 0
            if sweep:
                self._last_sweep = time.monotonic()
                lost = inbox.due(conn, now=now, older_than=timedelta(seconds=self.rt.timers.inbox_sweep_after),
                                 limit=self.batch)
                undelivered = len(outbox.due(conn, now=now, limit=1)) if self.rt.event_sinks else 0
        return _Work(due_orders, due_refunds, lost, undelivered, claim)

    def _enqueue(self, work: _Work) -> None:
        """Enqueue what was claimed. If Redis fails part-way, the polls not enqueued are made due again
        at once (not after the claim period); a crash here costs them one claim period, like a lost job."""
        pending = {orders: list(work.orders), refunds: list(work.refunds)}
        try:
            for table, enqueue in ((orders, self.rt.enqueuer.poll_order), (refunds, self.rt.enqueuer.poll_refund)):
                while pending[table]:
                    enqueue(pending[table][0])
                    pending[table].pop(0)
            for entry_id in work.inbox:
                self.rt.enqueuer.apply_notification(entry_id)  # one job per row: a poison row cannot block a shard
            if work.events:
                self.rt.enqueuer.deliver_events()
        except RedisError:
            with write(self.rt.engine) as conn:
                for table, ids in pending.items():
                    if ids:
                        conn.execute(table.update().where(table.c.id.in_(ids), table.c.next_poll_at == work.claim)
                                     .values(next_poll_at=self.rt.clock()))
            raise

    def _step_down(self, term: int) -> None:
        """A newer term began in SQL while this process believed it led: stop, and let the lease go."""
        current, holder = self._current()
        log.warning("scheduler.fenced", term=term, current_term=current, current_holder=holder)
        self.term = None
        try:
            if self.lease.owned():
                self.lease.release()
        except (LockError, RedisError):
            pass

    def _current(self) -> tuple[int, str | None]:
        with read(self.rt.engine) as conn:
            return leadership.current(conn)

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
