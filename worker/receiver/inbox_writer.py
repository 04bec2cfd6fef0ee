"""Group commit for the receiver: one thread writes every waiting notification in one transaction.

Why: each notification must be durable before it is acknowledged, and on SQLite a durable
commit is an fsync under a database-wide write lock. With one transaction per request, the
receiver's threads queue for that lock through SQLite's sleeping busy handler, and the tail
latency explodes under load (measured: p99 over 2 s at ~120 notifications/s). Here requests
hand their notification to a single writer thread and await its future; the writer takes
everything that is waiting (up to ``MAX_BATCH``), records it in one transaction, commits once,
makes a job certain for the batch's new rows (``wakes.BatchWaker``: two pipelined Redis round
trips per batch), and answers each request. Nothing is acknowledged before its commit, and a failed
commit fails every request of that batch (503: Checus retries). On PostgreSQL it saves round trips
and commits just the same.

Supervision: should anything escape the writer's loop, the thread fails the batch it held (its
requests get a prompt 503, not the 10 s timeout), logs ``inbox_writer.died``, and starts its own
replacement; a request that finds no live writer starts one too. ``alive`` and ``restarts`` are
what ``/healthz`` reports.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.engine import Engine

from worker.metrics import INBOX_WRITER_RESTARTS
from worker.receiver.wakes import BatchWaker, Committed
from worker.store import inbox
from worker.store.db import write

log = structlog.get_logger("worker.receiver.inbox_writer")

MAX_BATCH = 200
WAIT_SECONDS = 10.0  # how long a request waits for its commit before answering 503


@dataclass(frozen=True, slots=True)
class Kept:
    entry_id: int | None  # None: seen in Redis, so not written again (a redelivery)
    already_processed: bool
    unqueued: Exception | None = None  # committed, but no job is certain to apply it (answer 503)
    seen: bool = False  # kept before, as its Redis seen key says: acknowledged with no SQL


@dataclass(frozen=True, slots=True)
class _Item:
    entry: inbox.NewEntry
    result: Future[Kept]


class WriterDied(RuntimeError):
    """The writer thread died holding this notification: it was not kept (answer 503, Checus retries)."""


class InboxWriter:
    """Records notifications for many request threads through one supervised writer thread."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime], waker: BatchWaker | None = None) -> None:
        self.engine, self.clock, self.waker = engine, clock, waker
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._holding: list[_Item] = []  # the batch being written (failed by the supervisor if the loop dies)
        self.restarts = 0

    def submit(self, *, kind: str, ref: str, key: str, body: bytes, sign: str) -> Future[Kept]:
        """Queue the notification; the future resolves once it is committed (or the commit failed).

        The receiver awaits this future on its event loop, so a request waiting for the commit
        holds no thread.
        """
        self._ensure_running()
        item = _Item(inbox.NewEntry(kind=kind, ref=ref, key=key, body=body, sign=sign), Future())
        self._queue.put(item)
        return item.result

    @property
    def alive(self) -> bool:
        """False only when the writer thread died and no replacement runs (not started yet is alive)."""
        thread = self._thread
        return thread is None or thread.is_alive()

    def _ensure_running(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._spawn()
        elif not self._thread.is_alive():
            self._restart()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._supervised, name="inbox-writer", daemon=True)
        thread.start()
        self._thread = thread

    def _restart(self) -> None:
        """Start a replacement unless a live writer (other than the calling, dying one) already runs."""
        with self._lock:
            current = self._thread
            if current is not None and current is not threading.current_thread() and current.is_alive():
                return
            self.restarts += 1
            INBOX_WRITER_RESTARTS.inc()
            log.warning("inbox_writer.restarted", restarts=self.restarts)
            self._spawn()

    def _supervised(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - the writer must outlive whatever killed its loop
            log.error("inbox_writer.died", error=type(exc).__name__)
            died = WriterDied("the inbox writer died before this notification was committed")
            for item in self._holding:
                with contextlib.suppress(InvalidStateError):
                    item.result.set_exception(died)
            self._holding = []
        self._restart()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._holding = batch
            self._write(batch)
            self._holding = []

    def _write(self, everything: list[_Item]) -> None:
        batch = self._unseen(everything)
        if not batch:
            return
        try:
            with write(self.engine) as conn:
                kept = inbox.record_many(conn, [i.entry for i in batch], now=self.clock())
        except Exception as exc:  # noqa: BLE001 - whatever failed, every waiting request must hear of it
            for item in batch:
                with contextlib.suppress(InvalidStateError):
                    item.result.set_exception(exc)
            return
        unqueued = self._wake(batch, kept)
        for item, (entry_id, processed), why in zip(batch, kept, unqueued, strict=True):
            # A waiter that gave up (cancelled its future) was answered 503; its row is kept all the
            # same, and Checus's retry finds it. The writer thread must not die of that.
            with contextlib.suppress(InvalidStateError):
                item.result.set_result(Kept(entry_id, processed, why))

    def _unseen(self, batch: list[_Item]) -> list[_Item]:
        """Answer the redeliveries Redis has seen (no SQL for them); the rest are to be written."""
        if self.waker is None:
            return batch
        unseen = []
        for item, seen in zip(batch, self.waker.seen([i.entry.key for i in batch]), strict=True):
            if seen:
                with contextlib.suppress(InvalidStateError):
                    item.result.set_result(Kept(None, already_processed=True, seen=True))
            else:
                unseen.append(item)
        return unseen

    def _wake(self, batch: list[_Item], kept: list[tuple[int, bool]]) -> list[Exception | None]:
        if self.waker is None:
            return [None] * len(batch)
        try:
            return list(self.waker.settle([Committed(key=i.entry.key, ref=i.entry.ref, processed=processed)
                                           for i, (_, processed) in zip(batch, kept, strict=True)]))
        except Exception as exc:  # noqa: BLE001 - kept, but with no job certain: each request hears it
            return [exc] * len(batch)
