"""Regression tests for product bugs the reliability harness found, one per bug, fast and in-process.

Each names the harness run that found it. A failing storm seed or a shrunk Hypothesis example
becomes a test here (replay a storm with ``CHECUS_STORM_SEED``; see README.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from rq.registry import ScheduledJobRegistry

from worker import notifications
from worker.demo.stack import EmbeddedStack
from worker.queueing import make_queue
from worker.store.db import read
from worker.store.repo import find_order
from worker.store.schema import anomalies, inbox

from .crashes import SimulatedCrash, crash_at
from .simctl import SimControl


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", time_scale=0.01)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _forget_queued_jobs(stack: EmbeddedStack) -> None:
    queue = make_queue(stack.rt.redis)
    queue.empty()  # type: ignore[no-untyped-call]
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    for job_id in scheduled.get_job_ids():
        scheduled.remove(job_id, delete_job=True)


def _state(stack: EmbeddedStack, no: str) -> str | None:
    with read(stack.rt.engine) as conn:
        order = find_order(conn, no)
    return order.state if order else None


def _inbox_row(stack: EmbeddedStack, ref: str, status: str) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with read(stack.rt.engine) as conn:
            for row in conn.execute(sa.select(inbox.c.id, inbox.c.dedupe_key).where(inbox.c.ref == ref)):
                if f":{status}:" in row.dedupe_key:
                    return int(row.id)
        time.sleep(0.02)
    raise AssertionError(f"no {status} notification for {ref}")


def _anomaly_kinds(stack: EmbeddedStack) -> list[str]:
    with read(stack.rt.engine) as conn:
        return list(conn.execute(sa.select(anomalies.c.kind)).scalars())


def test_a_contradiction_is_confirmed_even_when_the_worker_dies_right_after_commit(stack: EmbeddedStack) -> None:
    """Found by the crash-point matrix (apply_notification x contradiction x after_commit): the confirming
    query of a contradicting notification was started only after commit, so a worker dying there lost it
    for good (the row was already marked processed, and terminal orders are never polled): the gateway's
    FAILED for an order we fulfilled never became an anomaly. The owed query is now recorded with the
    decision (``next_poll_at``), so the scheduler asks even if the worker died."""
    sim = SimControl(stack.sim.base_url)
    result = stack.service.create_card_payment(out_trade_no="REG_CONFIRM", amount=Decimal("20.00"), currency="USD",
                                               user_id="u", subject="r", front_callback_url="https://shop.test/r")
    assert result.state == "PENDING"
    assert sim.complete_order("REG_CONFIRM", "SUCCESS") == 200
    assert stack.settle(lambda: _state(stack, "REG_CONFIRM") == "SUCCESS")
    assert sim.complete_order("REG_CONFIRM", "FAILED", force=True) == 200
    entry = _inbox_row(stack, "REG_CONFIRM", "FAILED")
    with crash_at("after_commit"), pytest.raises(SimulatedCrash):
        notifications.apply_notification(stack.rt, entry)
    _forget_queued_jobs(stack)  # what the dead worker would have started after commit is gone
    assert stack.settle(lambda: _anomaly_kinds(stack) != [], timeout=15), "the contradiction was never confirmed"
    assert _anomaly_kinds(stack) == ["success_contradicted"]
    assert _state(stack, "REG_CONFIRM") == "SUCCESS"


def test_a_terminal_order_owed_a_query_is_asked_once_then_left_alone(stack: EmbeddedStack) -> None:
    """The other half of the fix above: the scheduler now polls terminal records whose poll is due (only a
    contradiction sets one, or a claim racing a final transition), and the answer clears it, so a
    terminal order is never polled forever."""
    from datetime import timedelta

    from worker.store.db import write
    from worker.store.schema import orders

    sim = SimControl(stack.sim.base_url)
    stack.service.create_card_payment(out_trade_no="REG_OWED", amount=Decimal("20.00"), currency="USD",
                                      user_id="u", subject="r", front_callback_url="https://shop.test/r")
    assert sim.complete_order("REG_OWED", "SUCCESS") == 200
    assert stack.settle(lambda: _state(stack, "REG_OWED") == "SUCCESS")
    stack.settle(lambda: False, timeout=0.5)
    with write(stack.rt.engine) as conn:
        conn.execute(orders.update().where(orders.c.out_trade_no == "REG_OWED")
                     .values(next_poll_at=stack.rt.clock() - timedelta(seconds=1)))
    before = int(sim.ledger()["calls"].get("orderQuery", 0))
    stack.settle(lambda: False, timeout=2.0)  # several scheduler ticks and claim periods
    with read(stack.rt.engine) as conn:
        left = conn.execute(sa.select(orders.c.next_poll_at).where(orders.c.out_trade_no == "REG_OWED")).scalar()
    assert int(sim.ledger()["calls"].get("orderQuery", 0)) - before == 1
    assert left is None and _state(stack, "REG_OWED") == "SUCCESS" and _anomaly_kinds(stack) == []


def test_a_poll_faster_than_the_schedulers_claim_keeps_the_next_poll_it_decided(stack: EmbeddedStack) -> None:
    """Found by the storm (seed 1234): the scheduler claimed due polls (next poll in ``poll_claim``) after
    enqueueing them, so a worker that ran the poll first had its decision overwritten: open orders were
    polled every claim period instead of along the backoff ladder, and a terminal order asked once more
    was asked again forever. The claim now only touches rows still due."""
    from datetime import timedelta

    from worker import polls
    from worker.scheduler import Scheduler
    from worker.store.db import write
    from worker.store.schema import orders

    sim = SimControl(stack.sim.base_url)
    for no in ("REG_CLAIM_OPEN", "REG_CLAIM_DONE"):
        stack.service.create_card_payment(out_trade_no=no, amount=Decimal("20.00"), currency="USD",
                                          user_id="u", subject="r", front_callback_url="https://shop.test/r")
    assert sim.complete_order("REG_CLAIM_DONE", "SUCCESS", notify=False) == 200
    rt = stack.rt
    past = rt.clock() - timedelta(seconds=1)
    with write(rt.engine) as conn:
        conn.execute(orders.update().where(orders.c.out_trade_no.in_(["REG_CLAIM_OPEN", "REG_CLAIM_DONE"]))
                     .values(next_poll_at=past, poll_count=2))
    _forget_queued_jobs(stack)

    real = rt.enqueuer

    class FastWorkers:  # every enqueued poll runs at once, before the scheduler's next statement
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def poll_order(self, order_id: int, **_: object) -> str:
            return polls.poll_order(rt, order_id)

    scheduler = Scheduler(rt, sweep_every=3600)
    rt.__dict__["enqueuer"] = FastWorkers()  # the cached_property's slot
    try:
        assert scheduler.tick().orders == 2
    finally:
        rt.__dict__["enqueuer"] = real
    with read(rt.engine) as conn:
        rows = dict(conn.execute(sa.select(orders.c.out_trade_no, orders.c.next_poll_at).where(
            orders.c.out_trade_no.in_(["REG_CLAIM_OPEN", "REG_CLAIM_DONE"]))).all())
    assert rt.timers.ladder(3) > 10 * timedelta(seconds=rt.timers.poll_claim)
    assert rows["REG_CLAIM_OPEN"] is not None
    assert rows["REG_CLAIM_OPEN"] - past > rt.timers.ladder(3) / 2  # the ladder's step 3, not the claim
    assert rows["REG_CLAIM_DONE"] is None and _state(stack, "REG_CLAIM_DONE") == "SUCCESS"
