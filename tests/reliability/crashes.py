"""In-process crashes: the named crash points raise instead of ``os._exit(137)``.

The real crash (a process dying) is what the crash-point matrix does. In-process tests and the
Hypothesis model need the same instant without losing the process: every module that calls
``crash_point`` gets a stand-in that raises ``SimulatedCrash`` (a ``BaseException``, so no handler
of the product swallows it) the n-th time the armed point is reached. Like a real crash, the open
transaction is rolled back and nothing after the point runs; unlike it, ``finally`` blocks do run
(a Redis lock is released at once instead of lapsing after its TTL).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from worker.runtime.crashpoints import POINTS

MODULES = ("worker.flows.transition", "worker.flows.applier", "worker.flows.polls", "worker.flows.refunding",
           "worker.flows.payments", "worker.flows.events", "worker.receiver.ingest", "worker.flows.notifications")


class SimulatedCrash(BaseException):
    """The process "died" at a crash point."""


def _modules() -> list[ModuleType]:
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "crash_point"):
            found.append(module)
    return found


@contextmanager
def crash_at(point: str, nth: int = 1) -> Iterator[list[int]]:
    """Raise ``SimulatedCrash`` the ``nth`` time ``point`` is reached; yields [times reached]."""
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}")
    seen = [0]

    def crash_point(name: str) -> None:
        if name == point:
            seen[0] += 1
            if seen[0] == nth:
                raise SimulatedCrash(point)

    patched = [(module, module.crash_point) for module in _modules()]
    for module, _original in patched:
        module.crash_point = crash_point  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        for module, original in patched:
            module.crash_point = original  # type: ignore[attr-defined]
