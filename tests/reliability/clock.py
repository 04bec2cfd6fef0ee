"""A clock for in-process runs that tests can push forward (the product takes ``Runtime.clock``)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class OffsetClock:
    """Wall time plus an offset that only grows: every timer of the runtime (polls, grace periods,
    sweeps, event retries) comes due as if that much time had passed."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
