"""Regression tests for product bugs the reliability harness found, one per bug, fast and in-process.

Each names the harness run that found it. A failing storm seed or a shrunk Hypothesis example
becomes a test here (replay a storm with ``CHECUS_STORM_SEED``; see README.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rq.registry import ScheduledJobRegistry

from worker.devtools.demo.stack import EmbeddedStack
from worker.flows import notifications, refunding
from worker.runtime.queueing import make_queue
from worker.store.db import read
from worker.store.repo import find_order, find_refund, history
from worker.store.schema import anomalies, inbox

from .crashes import SimulatedCrash, crash_at
from .simctl import SimControl
from .test_model import PaymentModel, World


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

    from worker.flows import polls
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


@pytest.fixture
def model(redis_url: str, tmp_path: Path) -> Iterator[PaymentModel]:
    """The Hypothesis model's machine on a world of its own, for replaying a shrunk program step by step."""
    world = World(tmp_path, redis_url)
    PaymentModel.world = world
    try:
        yield PaymentModel()
    finally:
        world.stop()


def _checked(state: PaymentModel) -> None:
    state.states_are_legal_money_fits_and_finals_stay()
    state.each_effect_happens_at_most_once_at_the_gateway()


# Where a send's job dies after Checus took the refund: with its answer in hand, or while recording it
# (the second time ``before_cas`` and ``after_outbox`` are reached: the first is the claim's own write).
AFTER_THE_CALL = [("after_gateway_call", 1), ("before_cas", 2), ("after_outbox", 2)]


@pytest.mark.parametrize(("point", "nth"), AFTER_THE_CALL)
def test_model_program_a_refund_whose_submit_died_while_queries_failed(model: PaymentModel, point: str,
                                                                      nth: int) -> None:
    """Found by random explorations of the model (issue 4): "refund ...R.. is CREATED, the gateway says
    REFUND_FAILED" (a submit dying at ``after_lock``), and again with seed 3239625348 at 300 x 40 ("...
    the gateway says REFUND_SUCCESS", a submit dying at ``after_outbox``; 34 steps after an unfinished
    shrink, this is its core). The submit job died after the gateway had accepted the refund and before
    anything was recorded, while the query API was failing. The model's error, not the product's: it threw
    the job away by taking its id off the queue only, leaving rq's record of it saying "queued", so every
    later ``submit_refund`` of that refund (the poll asks for one every claim period) was deduplicated
    against a job nobody would ever run. No real crash leaves that behind (rq keeps a dead worker's job as
    started and retries it; a Redis loss keeps a prefix of the commands); the model now throws the whole job
    away, as the crash matrix does, and the product resubmits: Checus replays REFUND_FAILED."""
    state = model
    state.fresh_world()
    orders_0 = state.create_order(cents=2000, lost=False, outcome="SUCCESS", notify=True)
    _checked(state)
    paid_0 = state.merchant_waits_for_the_outcome(order=orders_0)
    _checked(state)
    refunds_0 = state.refund_a_paid_order(order=paid_0, share=50)
    assert paid_0 == orders_0 and isinstance(refunds_0, str) and refunds_0 in state.refunds
    _checked(state)
    state.query_api_fails(on=True)
    state.a_worker_dies_in_the_next_job(point=point, nth=nth)
    _checked(state)
    state.gateway_settles_refund(refund=refunds_0, status="REFUND_FAILED", notify=False)
    state.time_passes(seconds=120.0)
    state.run_all_jobs()
    _checked(state)
    state.teardown()  # quiesce: the store must equal the gateway
    _checked(state)
    assert state.final[refunds_0] == "REFUND_FAILED"


def test_model_program_a_resubmitted_refund_checus_already_refunded(model: PaymentModel) -> None:
    """Found by the model once it threw crashed jobs away whole: the same program, the gateway settling the
    refund REFUND_SUCCESS. The resubmit (same outRefundNo) is answered with the refund's current status, and
    ``RefundSubmitAccepted`` refuses REFUND_SUCCESS (a /refund call only answers PENDING or FAILED at once):
    every submit job died with ValueError, and the refund stayed CREATED while Checus had paid it back."""
    state = model
    state.fresh_world()
    orders_0 = state.create_order(cents=2000, lost=False, outcome="SUCCESS", notify=True)
    paid_0 = state.merchant_waits_for_the_outcome(order=orders_0)
    refunds_0 = state.refund_a_paid_order(order=paid_0, share=50)
    assert paid_0 == orders_0 and isinstance(refunds_0, str) and refunds_0 in state.refunds
    state.a_worker_dies_in_the_next_job(point="before_cas", nth=2)
    _checked(state)
    state.gateway_settles_refund(refund=refunds_0, status="REFUND_SUCCESS", notify=False)
    state.run_all_jobs()
    _checked(state)
    state.teardown()
    _checked(state)
    assert state.final[refunds_0] == "REFUND_SUCCESS"


def test_a_refund_whose_answer_died_with_its_worker_is_settled_by_query_not_sent_again(stack: EmbeddedStack) -> None:
    """The product half of the fix above, in-process, since sends are claimed: a submit whose worker died
    after the gateway took the refund leaves it UNKNOWN (claimed), so a second submit job sends nothing
    ("not_created"); Checus finishes it without a notification and the poll settles it: one creation at
    the gateway, a legal history."""
    sim = SimControl(stack.sim.base_url)
    stack.service.create_card_payment(out_trade_no="REG_REPLAY", amount=Decimal("20.00"), currency="USD",
                                      user_id="u", subject="r", front_callback_url="https://shop.test/r")
    assert sim.complete_order("REG_REPLAY", "SUCCESS") == 200
    assert stack.settle(lambda: _state(stack, "REG_REPLAY") == "SUCCESS")
    stack.service.refund("REG_REPLAY", Decimal("5.00"), out_refund_no="REG_REPLAY_R")
    _forget_queued_jobs(stack)
    refund = _refund(stack, "REG_REPLAY_R")
    with crash_at("before_cas", 2), pytest.raises(SimulatedCrash):  # recording the answer
        refunding.submit_refund(stack.rt, refund.id)
    assert _refund(stack, "REG_REPLAY_R").state == "UNKNOWN"
    assert sim.complete_refund("REG_REPLAY_R", "REFUND_SUCCESS", notify=False) == 200
    assert refunding.submit_refund(stack.rt, refund.id) == "not_created"
    assert stack.settle(lambda: _refund(stack, "REG_REPLAY_R").state == "REFUND_SUCCESS", timeout=15)
    with read(stack.rt.engine) as conn:
        steps = [(h.from_state, h.to_state, h.source) for h in history(conn, "refund", refund.id)]
    assert steps == [("CREATED", "UNKNOWN", "api"), ("UNKNOWN", "REFUND_SUCCESS", "poll")]
    assert sim.ledger()["refunds"].get("REG_REPLAY_R") == 1


def _refund(stack: EmbeddedStack, no: str) -> Any:
    with read(stack.rt.engine) as conn:
        refund = find_refund(conn, no)
    assert refund is not None
    return refund
