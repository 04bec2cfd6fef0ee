"""Late notifications (target 4): polling alone reaches the gateway's final state, and a gateway that
answers nothing but errors and timeouts never makes the worker infer one.

In-process (the embedded stack: simulator and receiver on threads, jobs drained here, SQLite and a
real Redis), with an offset clock so that a poll ladder of minutes passes in a few drains.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker.devtools.demo.stack import EmbeddedStack
from worker.store.db import read
from worker.store.repo import find_order, find_refund
from worker.store.schema import inbox, transitions

from .checker import Report, check, load_snapshot
from .clock import OffsetClock
from .simctl import SimControl
from .sinks import FileSink

NO_NOTIFICATIONS = {"notifications": {"drop_rate": 1}}
OUTAGE = {"endpoints": {"*": {"error_rate": 0.5, "error_code": "http_500", "timeout_rate": 1,
                              "timeout_seconds": 1.0}},
          "notifications": {"drop_rate": 1}}


@dataclass
class Late:
    stack: EmbeddedStack
    sim: SimControl
    sink: FileSink
    clock: OffsetClock

    def pay(self, no: str, *, expire_seconds: int | None = None) -> str:
        return self.stack.service.create_card_payment(
            out_trade_no=no, amount=Decimal("30.00"), currency="USD", user_id="late", subject="late",
            front_callback_url="https://shop.test/return", expire_seconds=expire_seconds).state

    def state(self, no: str, *, refund: bool = False) -> str | None:
        with read(self.stack.rt.engine) as conn:
            record = find_refund(conn, no) if refund else find_order(conn, no)
        return record.state if record else None

    def rounds(self, n: int, *, seconds: float = 120.0) -> None:
        """Let ``seconds`` of product time pass, then run everything that fell due, ``n`` times."""
        for _ in range(n):
            self.clock.advance(seconds)
            self.stack.drain()

    def report(self, *, expect_terminal: bool = True) -> Report:
        return check(load_snapshot(self.stack.rt.engine, self.sim, self.sink.deliveries()),
                     expect_terminal=expect_terminal)


@pytest.fixture
def late(redis_url: str, tmp_path: Path) -> Iterator[Late]:
    sink = FileSink(tmp_path / "events.jsonl")
    stack = EmbeddedStack(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", time_scale=0.01,
                          event_sinks=(sink,), sim_options={"lenient_clock": True})
    stack.start()
    clock = OffsetClock()
    stack.rt.clock = clock
    stack.rt.settings = stack.rt.settings.with_overrides(http_read_timeout=0.5, http_connect_timeout=0.5)
    try:
        yield Late(stack, SimControl(stack.sim.base_url), sink, clock)
    finally:
        stack.stop()


@pytest.mark.timeout(120)
def test_orders_never_notified_reach_the_gateways_final_state_by_polling(late: Late) -> None:
    """Every notification is lost; success, failure, closing (also by expiry at the gateway) and refunds are
    learnt from /orderQuery and /refundQuery alone."""
    late.sim.set_faults(NO_NOTIFICATIONS)
    outcomes = {"LATE_S1": "SUCCESS", "LATE_S2": "SUCCESS", "LATE_S3": "SUCCESS", "LATE_F1": "FAILED",
                "LATE_F2": "FAILED", "LATE_C1": "CLOSED", "LATE_C2": "CLOSED"}
    for no in outcomes:
        assert late.pay(no) == "PENDING"
    assert late.pay("LATE_EXPIRES", expire_seconds=1800) == "PENDING"
    for no, status in outcomes.items():
        assert late.sim.complete_order(no, status) == 200
    late.rounds(3)
    assert all(late.state(no) == status for no, status in outcomes.items())
    late.stack.service.refund("LATE_S1", Decimal("10.00"), out_refund_no="LATE_R1")
    late.stack.service.refund("LATE_S2", Decimal("30.00"), out_refund_no="LATE_R2")
    late.rounds(2)
    assert late.state("LATE_R1", refund=True) == late.state("LATE_R2", refund=True) == "REFUND_PENDING"
    assert late.sim.complete_refund("LATE_R1", "REFUND_SUCCESS") == 200
    assert late.sim.complete_refund("LATE_R2", "REFUND_FAILED") == 200
    late.sim.advance(1801)  # past expireTime: the gateway closes LATE_EXPIRES and tells no one
    late.rounds(4)
    report = late.report()
    assert report.ok, report.summary()
    assert late.state("LATE_EXPIRES") == "CLOSED"
    with read(late.stack.rt.engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one() == 0
        last = conn.execute(sa.select(transitions.c.entity, transitions.c.entity_id, transitions.c.to_state,
                                      transitions.c.source)).all()
    final = [row for row in last if row.to_state in ("SUCCESS", "FAILED", "CLOSED", "REFUND_SUCCESS",
                                                     "REFUND_FAILED")]
    assert len(final) == len(outcomes) + 3 and all(row.source == "poll" for row in final), final


@pytest.mark.timeout(180)
def test_no_final_state_is_inferred_from_a_gateway_outage(late: Late) -> None:
    """Every gateway endpoint answers 5xx or times out: orders and refunds stay PENDING/UNKNOWN whatever
    the gateway did meanwhile, polls keep asking; once it answers again everything converges."""
    for no in ("OUT_P1", "OUT_P2"):
        assert late.pay(no) == "PENDING"
        assert late.sim.complete_order(no, "SUCCESS") == 200
    assert late.stack.settle(lambda: late.state("OUT_P1") == late.state("OUT_P2") == "SUCCESS")
    late.stack.service.refund("OUT_P1", Decimal("10.00"), out_refund_no="OUT_R1")
    for no in ("OUT_A1", "OUT_A2", "OUT_A3"):
        assert late.pay(no) == "PENDING"
    assert late.stack.settle(lambda: late.state("OUT_R1", refund=True) == "REFUND_PENDING")
    late.stack.settle(lambda: False, timeout=0.5)
    with read(late.stack.rt.engine) as conn:
        seen = conn.execute(sa.select(sa.func.max(transitions.c.id))).scalar_one()

    late.sim.set_faults(OUTAGE)
    assert late.sim.complete_order("OUT_A1", "SUCCESS") == 200  # what the gateway knows, and cannot tell
    assert late.sim.complete_order("OUT_A2", "FAILED") == 200
    assert late.sim.complete_refund("OUT_R1", "REFUND_SUCCESS") == 200
    assert late.pay("OUT_B1") == "UNKNOWN"  # the create itself errs or times out
    late.stack.service.refund("OUT_P2", Decimal("10.00"), out_refund_no="OUT_R2")
    queries = int(late.sim.ledger()["calls"].get("orderQuery", 0))
    late.rounds(6)
    asked = int(late.sim.ledger()["calls"].get("orderQuery", 0)) - queries
    assert asked >= 6, f"only {asked} order polls during the outage"
    for no in ("OUT_A1", "OUT_A2", "OUT_A3"):
        assert late.state(no) == "PENDING", no
    assert late.state("OUT_B1") == "UNKNOWN"
    assert late.state("OUT_R1", refund=True) == "REFUND_PENDING"
    assert late.state("OUT_R2", refund=True) == "UNKNOWN"
    with read(late.stack.rt.engine) as conn:
        during = conn.execute(sa.select(transitions.c.trigger, transitions.c.to_state)
                              .where(transitions.c.id > seen)).all()
    # nothing but "we do not know" was recorded: each new send claimed (to UNKNOWN), its answer unread
    unknowing = {("send_claimed", "UNKNOWN"), ("submit_unknown", "UNKNOWN")}
    assert {(t.trigger, t.to_state) for t in during} <= unknowing, during
    assert {t.trigger for t in during} >= {"send_claimed"}, during

    late.sim.set_faults(NO_NOTIFICATIONS)  # the gateway answers again (its notifications stay lost)
    late.rounds(8)
    report = late.report(expect_terminal=False)
    assert report.ok, report.summary()
    assert late.state("OUT_A1") == "SUCCESS" and late.state("OUT_A2") == "FAILED"
    assert late.state("OUT_R1", refund=True) == "REFUND_SUCCESS"
    assert late.state("OUT_B1") == "PENDING" and late.state("OUT_R2", refund=True) == "REFUND_PENDING"
