"""Named crash points for the reliability harness: inert unless an environment variable arms one.

``CHECUS_CRASH_AT=name`` (or ``name:n`` for the n-th time that point is reached) makes the
process die on the spot with ``os._exit(137)``, exactly as a ``kill -9`` would: no cleanup, no
``finally``, no flush. The harness uses it to prove that every job converges, without a double
effect, whatever instant a process dies at. Unarmed, a crash point costs one comparison.

This module reads the environment itself (the one exception to "config is parsed once in
``config.py``"): it must work in any process the harness starts, before anything is built.
"""

from __future__ import annotations

import os
from collections import Counter

POINTS = frozenset({
    "after_lock",  # a poll holds the record's Redis lock, nothing asked yet
    "before_cas",  # a decision is made on the record as read; nothing written yet
    "after_outbox",  # the transition, its audit row and outbox rows are written, not committed
    "after_commit",  # the transition is committed; follow-up effects not started
    "after_claim",  # a send is claimed (committed); the request is not sent yet
    "after_gateway_call",  # Checus answered (or not); nothing recorded yet
    "before_ack",  # the receiver kept and enqueued a notification; the ack is not sent
    "after_event_delivery",  # a merchant event was delivered; not yet marked delivered
})


def _armed(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"CHECUS_CRASH_AT: unknown crash point {name!r}; known: {', '.join(sorted(POINTS))}")
    return name, int(count or 1)


_ARMED = _armed(os.environ.get("CHECUS_CRASH_AT"))
_seen: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Die here, like kill -9, if this point is armed and reached the armed number of times."""
    if _ARMED is None or name != _ARMED[0]:
        return
    _seen[name] += 1
    if _seen[name] >= _ARMED[1]:
        os._exit(137)
