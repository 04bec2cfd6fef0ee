"""Virtual time: the wall clock plus an offset that the control API can push forward.

Everything the simulator does "later" (order expiry, refund auto-completion, notification
retries) is a job on one scheduler keyed by *virtual* time. Real time moves the virtual clock
as usual, and ``POST /__sim/clock/advance`` moves it at once, so a test can make a day pass in
a millisecond and see exactly the jobs that fall due run, in due order.

Protocol delays (the retry ladder, refund auto-completion) are multiplied by the config's
``time_scale`` before they are scheduled; order expiry is not, because ``expireTime`` is a
business deadline the merchant chose, and a test that wants it reached advances the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

log = structlog.get_logger("worker.devtools.simulator")
MAX_IDLE_SECONDS = 1.0  # re-check at least this often, so wall-clock jobs are never late by more

Job = Callable[[], None]


class VirtualClock:
    """Thread-safe: tests may read ``now()`` from their own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def now(self) -> datetime:
        with self._lock:
            offset = self._offset
        return datetime.now(UTC) + timedelta(seconds=offset)

    @property
    def offset_seconds(self) -> float:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the virtual clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0


class Scheduler:
    """Runs callbacks at virtual times, on the event loop it was started on."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._heap: list[tuple[datetime, int, Job]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def at(self, due: datetime, job: Job) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), job))
        self.wake()

    def after(self, seconds: float, job: Job) -> None:
        self.at(self._clock.now() + timedelta(seconds=max(seconds, 0.0)), job)

    def wake(self) -> None:
        """Look at the queue again now (after a clock advance or a new job)."""
        if self._wake is not None:
            self._wake.set()

    def clear(self) -> None:
        self._heap.clear()

    def run_due(self) -> int:
        """Run every job whose time has come; returns how many ran."""
        ran = 0
        while self._heap and self._heap[0][0] <= self._clock.now():
            _due, _seq, job = heapq.heappop(self._heap)
            ran += 1
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - one broken job must not stop every later one
                # No traceback: a renderer that shows locals could print bodies or keys.
                log.error("sim.scheduler.job_failed", error=type(exc).__name__)
        return ran

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self.run_due()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._idle_seconds())

    def _idle_seconds(self) -> float:
        if not self._heap:
            return MAX_IDLE_SECONDS
        remaining = (self._heap[0][0] - self._clock.now()).total_seconds()
        return min(max(remaining, 0.0), MAX_IDLE_SECONDS)
