"""The scheduler's fence: terms in SQL, so that two schedulers never act at once.

The Redis lease (``worker.scheduler``) decides who *should* lead and saves the others the effort.
It cannot decide who *may* act: a leader partitioned from Redis, or paused past the lease, goes on
believing it leads until it next asks. So a leader first begins a term here (``begin_term``: the
one ``scheduler_leader`` row moves to a new term), and then takes each action inside a
transaction that first holds that row with its own term (``hold``). The row lock serializes the
two: a tick of term N either commits before term N+1 begins or finds the row moved and does
nothing. ``scheduler_terms`` keeps the history (who led, from when, last tick, ticks), which is
also what the partition test reads to prove it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import scheduler_leader, scheduler_terms

LEADER_ROW = 1


def begin_term(conn: Connection, *, holder: str, clock: Callable[[], datetime]) -> int:
    """Start a new term for ``holder`` and return it. The ``UPDATE`` waits for a tick of the old
    term that holds the row, so the old term's last action is committed before this one starts."""
    conn.execute(scheduler_leader.update().where(scheduler_leader.c.id == LEADER_ROW)
                 .values(term=scheduler_leader.c.term + 1, holder=holder))
    term = int(conn.execute(sa.select(scheduler_leader.c.term)
                            .where(scheduler_leader.c.id == LEADER_ROW)).scalar_one())
    conn.execute(scheduler_terms.insert().values(term=term, holder=holder, started_at=clock(), ticks=0))
    return term


def hold(conn: Connection, *, term: int, clock: Callable[[], datetime]) -> bool:
    """Hold the leader row for ``term`` until this transaction ends; False when a newer term began
    (then the caller must do nothing in this transaction). The tick time is read once the row is
    held, so the history's ``last_tick_at`` of a term is never later than the next term's start."""
    held = conn.execute(scheduler_leader.update()
                        .where(scheduler_leader.c.id == LEADER_ROW, scheduler_leader.c.term == term)
                        .values(term=term)).rowcount == 1
    if held:
        conn.execute(scheduler_terms.update().where(scheduler_terms.c.term == term)
                     .values(last_tick_at=clock(), ticks=scheduler_terms.c.ticks + 1))
    return held


def current(conn: Connection) -> tuple[int, str | None]:
    """The current term and its holder (term 0, no holder: no scheduler has led yet)."""
    row = conn.execute(sa.select(scheduler_leader.c.term, scheduler_leader.c.holder)
                       .where(scheduler_leader.c.id == LEADER_ROW)).one()
    return int(row.term), row.holder
