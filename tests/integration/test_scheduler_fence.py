"""The scheduler's SQL fence: a leader that lost its lease without knowing it does nothing.

The rule, stated without the code: at most one scheduler acts at a time, where acting means
claiming polls and sweeping. A scheduler that still believes it leads after another took over
(it was paused or partitioned past its Redis lease) must enqueue nothing and step down, and the
history in SQL shows each term's last tick before the next term's start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.integration.test_events_and_scheduler import migrated_runtime
from worker.runtime import Runtime
from worker.runtime.queueing import make_queue
from worker.scheduler import Scheduler
from worker.store import leadership, repo
from worker.store.db import read, write
from worker.store.schema import scheduler_terms

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def runtime(redis_url: str, database_url: str) -> Iterator[Runtime]:
    yield from migrated_runtime(redis_url, database_url, lambda: datetime.now(UTC))


def due_order(rt: Runtime, no: str) -> int:
    due = rt.clock() - timedelta(seconds=1)
    with write(rt.engine) as conn:
        return repo.insert_order(conn, {
            "out_trade_no": no, "kind": "hosted", "state": "PENDING", "amount_minor": 100, "currency": "USD",
            "country": "US", "user_id": "u1", "subject": "s", "tokenize": False, "app_id": "A", "merchant_no": "M",
            "request_json": "{}", "created_at": NOW, "updated_at": NOW, "next_poll_at": due,
        })


def terms(rt: Runtime) -> list[sa.Row[tuple[int, str, datetime, datetime | None, int]]]:
    with read(rt.engine) as conn:
        return list(conn.execute(sa.select(scheduler_terms.c.term, scheduler_terms.c.holder,
                                           scheduler_terms.c.started_at, scheduler_terms.c.last_tick_at,
                                           scheduler_terms.c.ticks).order_by(scheduler_terms.c.term)))


def test_a_leader_past_its_lease_is_fenced_and_enqueues_nothing(runtime: Runtime) -> None:
    old = Scheduler(runtime, lease_seconds=0.3, sweep_every=3600)
    assert old.tick().leader and old.term == 1
    # The old leader is "paused" here: its lease runs out and another scheduler takes over.
    time.sleep(0.5)
    new = Scheduler(runtime, sweep_every=3600)
    first = due_order(runtime, "FIRST")
    report = new.tick()
    assert report.leader and new.term == 2 and report.orders == 1
    second = due_order(runtime, "SECOND")
    # The old one wakes up still believing it leads (it did not ask Redis again) and acts on its term.
    stale = old.act(1)
    assert stale.fenced and not stale.leader and old.term is None
    assert make_queue(runtime.redis).job_ids == [f"poll-order-{first}"]  # nothing of the old term's
    with read(runtime.engine) as conn:
        order = repo.get_order(conn, second)
        assert leadership.current(conn) == (2, new.holder)
    assert order is not None and order.next_poll_at is not None
    assert order.next_poll_at <= runtime.clock()  # still due: the old term claimed nothing
    history = terms(runtime)
    assert [t.term for t in history] == [1, 2]
    assert history[0].last_tick_at is not None and history[0].last_tick_at <= history[1].started_at
    assert new.tick().orders == 1  # the new leader takes it


def test_a_scheduler_that_takes_the_lease_again_begins_a_new_term(runtime: Runtime) -> None:
    one = Scheduler(runtime, sweep_every=3600)
    assert one.tick().leader and one.term == 1
    one.tick()
    assert one.term == 1  # renewing the lease keeps the term
    one.lease.release()
    assert one.tick().leader and one.term == 2
    assert [(t.term, t.ticks) for t in terms(runtime)] == [(1, 2), (2, 1)]


def test_a_new_term_waits_for_the_tick_that_holds_the_old_one(runtime: Runtime) -> None:
    """The row lock is what fences: begin_term cannot commit while a tick of the old term is open."""
    with write(runtime.engine) as conn:
        term = leadership.begin_term(conn, holder="a:1", clock=runtime.clock)
    began = threading.Event()
    result: list[int] = []

    def take_over() -> None:
        with write(runtime.engine) as other:
            result.append(leadership.begin_term(other, holder="b:2", clock=runtime.clock))
        began.set()

    with write(runtime.engine) as conn:
        assert leadership.hold(conn, term=term, clock=runtime.clock)
        thread = threading.Thread(target=take_over)
        thread.start()
        assert not began.wait(0.5)  # blocked on the leader row while this tick is open
    thread.join(20)
    assert result == [term + 1]
    with write(runtime.engine) as conn:
        assert not leadership.hold(conn, term=term, clock=runtime.clock)
        assert leadership.hold(conn, term=term + 1, clock=runtime.clock)
    history = terms(runtime)
    assert history[0].last_tick_at is not None and history[0].last_tick_at <= history[1].started_at
