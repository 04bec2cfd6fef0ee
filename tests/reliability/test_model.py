"""A Hypothesis stateful model of payments, refunds, deliveries, polls, crashes and time, run against the
real code in-process: the embedded stack (simulator and receiver on threads, a real Redis, SQLite),
jobs run here by rq's ``SimpleWorker``, and an offset clock for time.

Rules: the merchant creates orders (some whose create the gateway never receives) and asks for refunds
(some above what is left, which must be refused); the gateway settles orders and refunds, notifying or
not, and sometimes contradicts itself; Checus redelivers notifications; an attacker posts tampered ones;
the query API starts and stops failing; jobs run all, a few, twice, or die at a crash point (the job is
then lost with its worker: only the product's scheduler and sweeper can finish its work); time passes.

Invariants after every step, over this run's records: every state is one of the tables'; Σ successful
refunds ≤ paid and Σ(created + pending + unknown + successful) ≤ paid; at most one creation per
outTradeNo/outRefundNo at the gateway; a final state never changes (nothing here is an operator).
The ``quiesce`` rule (also run at the end) lets the gateway settle what is open, runs the system until
it is still, and asserts it equals the gateway with the checker (lost, twice, illegal, money, events).

CI budget: ``CHECUS_MODEL_EXAMPLES=80``, ``CHECUS_MODEL_STEPS=30``. Nightly: 2000 x 60 (README.md).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from statemachine import OrderState, RefundState
from worker import jobs
from worker.devtools.demo.redis_server import RedisServer
from worker.devtools.demo.stack import EmbeddedStack
from worker.gateway.signing import Signer
from worker.gateway.wire import dumps, format_time
from worker.runtime.queueing import make_queue
from worker.service_errors import RefundRefused
from worker.store.db import read
from worker.store.schema import orders, refunds

from .checker import check, load_snapshot
from .clock import OffsetClock
from .conftest import note
from .crashes import SimulatedCrash, crash_at
from .settings import model_budget
from .simctl import SimControl
from .sinks import FileSink

ORDER_FINAL = frozenset({"SUCCESS", "FAILED", "CLOSED"})
REFUND_FINAL = frozenset({"REFUND_SUCCESS", "REFUND_FAILED"})
POINTS = ("after_lock", "before_cas", "after_outbox", "after_commit", "after_claim", "after_gateway_call",
          "after_event_delivery")
RUNS = itertools.count()


class World:
    """What every example shares: one stack, one event log, one clock (records are per example)."""

    def __init__(self, root: Path, redis_url: str) -> None:
        self.sink = FileSink(root / "events.jsonl")
        self.stack = EmbeddedStack(redis_url=redis_url, database_url=f"sqlite:///{root / 'store.db'}",
                                   time_scale=0.01, event_sinks=(self.sink,)).start()
        self.clock = OffsetClock()
        self.stack.rt.clock = self.clock
        self.sim = SimControl(self.stack.sim.base_url)
        self.signer = Signer.from_value(self.stack.platform.private_key, setting="platform")
        self.examples = 0
        self.steps = 0

    def stop(self) -> None:
        self.sim.close()
        self.stack.stop()


class PaymentModel(RuleBasedStateMachine):
    world: World

    order_refs = Bundle("orders")
    paid_refs = Bundle("paid")  # orders the merchant has seen paid
    refund_refs = Bundle("refunds")

    def __init__(self) -> None:
        super().__init__()
        self.run = next(RUNS)
        self.orders: dict[str, Decimal] = {}
        self.refunds: dict[str, str] = {}  # outRefundNo -> outTradeNo
        self.final: dict[str, str] = {}  # the first final state seen per record
        self.contradicted: set[str] = set()
        self.seq = itertools.count()

    # -- set-up ---------------------------------------------------------------------------------

    @initialize()
    def fresh_world(self) -> None:
        w = self.world
        w.examples += 1
        w.sim.clear_faults()
        queue = make_queue(w.stack.rt.redis)
        queue.empty()  # type: ignore[no-untyped-call]
        scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
        for job_id in scheduled.get_job_ids():
            scheduled.remove(job_id, delete_job=True)

    def number(self, kind: str) -> str:
        return f"M{self.run:04d}{kind}{next(self.seq):02d}"

    # -- the merchant ---------------------------------------------------------------------------

    @rule(target=order_refs, cents=st.integers(100, 20000), lost=st.booleans(),
          outcome=st.sampled_from([None, "SUCCESS", "SUCCESS", "SUCCESS", "FAILED", "CLOSED"]),
          notify=st.booleans())
    def create_order(self, cents: int, lost: bool, outcome: str | None, notify: bool) -> str:
        """The merchant creates an order; often the buyer settles it at once (the gateway may not tell)."""
        no = self.number("O")
        if lost:  # the gateway never receives the create: UNKNOWN, resent after the grace period
            self.world.sim.set_faults({"endpoints": {"orderAndPay": {"drop_rate": 1,
                                                                     "drop_applies_effect": False}}})
        try:
            result = self.world.stack.service.create_card_payment(
                out_trade_no=no, amount=Decimal(cents) / 100, currency="USD", user_id="model", subject="model",
                front_callback_url="https://shop.test/return")
        finally:
            if lost:
                self.world.sim.clear_faults()
        assert result.state == ("UNKNOWN" if lost else "PENDING")
        self.orders[no] = Decimal(cents) / 100
        if outcome is not None:
            assert self.world.sim.complete_order(no, outcome, notify=notify) in (200, 404)  # 404: create lost
        return no

    @rule(target=paid_refs, order=order_refs)
    def merchant_waits_for_the_outcome(self, order: str) -> Any:
        """The shop waits (bounded) until the order is final, as when the buyer comes back from the cashier."""
        w = self.world
        state = None
        for _ in range(8):
            w.stack.drain()
            state = self._states().get(order, (None, None))[0]
            if state in ORDER_FINAL:
                break
            w.clock.advance(5)
        return order if state == "SUCCESS" else multiple()

    @rule(target=refund_refs, order=paid_refs, share=st.sampled_from([10, 25, 50, 60, 100, 150]))
    def refund_a_paid_order(self, order: str, share: int) -> str:
        return self.request_refund(order, share)

    @rule(target=refund_refs, order=order_refs, share=st.sampled_from([10, 50, 100, 150]))
    def refund_any_order(self, order: str, share: int) -> str:
        """Also before the merchant saw it paid: refused unless the store says SUCCESS."""
        return self.request_refund(order, share)

    def request_refund(self, order: str, share: int) -> str:
        no = self.number("R")
        amount = (self.orders[order] * share / 100).quantize(Decimal("0.01"))
        try:
            self.world.stack.service.refund(order, amount, out_refund_no=no)
        except RefundRefused as refused:  # checked by the invariants: an accepted one must fit
            assert refused.reason in ("order_not_paid", "exceeds_refundable"), refused.reason
            return no
        self.refunds[no] = order
        return no

    # -- the gateway ----------------------------------------------------------------------------

    @rule(order=order_refs, status=st.sampled_from(["SUCCESS", "FAILED", "CLOSED"]), notify=st.booleans())
    def gateway_settles(self, order: str, status: str, notify: bool) -> None:
        assert self.world.sim.complete_order(order, status, notify=notify) in (200, 404, 409)

    @rule(order=order_refs, status=st.sampled_from(["SUCCESS", "FAILED"]))
    def gateway_contradicts_itself(self, order: str, status: str) -> None:
        truth = self.world.sim.order(order)
        if truth is not None and truth["status"] in ORDER_FINAL and truth["status"] != status:
            assert self.world.sim.complete_order(order, status, force=True) == 200
            self.contradicted.add(order)

    @rule(refund=refund_refs, status=st.sampled_from(["REFUND_SUCCESS", "REFUND_FAILED"]), notify=st.booleans())
    def gateway_settles_refund(self, refund: str, status: str, notify: bool) -> None:
        assert self.world.sim.complete_refund(refund, status, notify=notify) in (200, 404, 409)

    @rule(on=st.booleans())
    def query_api_fails(self, on: bool) -> None:
        if on:
            fault = {"error_rate": 1, "error_code": "http_500"}
            self.world.sim.set_faults({"endpoints": {"orderQuery": fault, "refundQuery": fault}})
        else:
            self.world.sim.clear_faults()

    # -- deliveries -------------------------------------------------------------------------------

    @rule(key=st.one_of(order_refs, refund_refs), copies=st.integers(1, 3))
    def checus_redelivers(self, key: str, copies: int) -> None:
        self.world.sim.resend(key, copies)  # False when nothing was sent for it yet

    @rule(order=order_refs, status=st.sampled_from(["SUCCESS", "FAILED"]), flip=st.integers(0, 200))
    def attacker_posts_a_tampered_notification(self, order: str, status: str, flip: int) -> None:
        w = self.world
        body = dumps({"code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": w.stack.settings.app_id,
                      "merchantNo": w.stack.settings.merchant_no, "notifyTime": format_time(w.stack.rt.clock()),
                      "notifyType": "PAYMENT", "data": {"outTradeNo": order, "tradeToken": "T1",
                                                        "totalAmount": self.orders[order], "currency": "USD",
                                                        "status": status, "paymentDetails": []}})
        sign = w.signer.sign(body)
        position = flip % len(body)
        tampered = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1:]
        response = httpx.post(w.stack.receiver.base_url + "/checus/notify/payment", content=tampered, timeout=10,
                              headers={"sign": sign, "content-type": "application/json"})
        assert response.status_code in (400, 401), response.status_code  # never kept, never acknowledged

    # -- jobs, crashes and time -----------------------------------------------------------------

    @rule()
    def run_all_jobs(self) -> None:
        self.world.stack.drain()

    @rule(n=st.integers(1, 3))
    def run_a_few_jobs(self, n: int) -> None:
        worker = SimpleWorker([make_queue(self.world.stack.rt.redis)], connection=self.world.stack.rt.redis,
                              serializer=JSONSerializer, log_job_description=False)
        worker.work(burst=True, max_jobs=n, logging_level="WARNING")

    @rule(point=st.sampled_from(POINTS), nth=st.integers(1, 2))
    def a_worker_dies_in_the_next_job(self, point: str, nth: int) -> None:
        """The next job dies at ``point`` and is lost with its worker (rq will not run it again)."""
        job = self._take_next_job()
        if job is None:
            return
        with crash_at(point, nth), contextlib.suppress(SimulatedCrash):
            _call(job)

    @rule()
    def a_job_runs_twice(self) -> None:
        """rq may run a job twice: here, twice in a row and once more from the queue later."""
        queue = make_queue(self.world.stack.rt.redis)
        for job_id in queue.job_ids[:1]:
            job = Job.fetch(job_id, connection=self.world.stack.rt.redis, serializer=JSONSerializer)
            _call(job)
            _call(job)

    def _take_next_job(self) -> Job | None:
        """The next job, gone from Redis as the crash matrix throws it away: the job *and its record*.
        Only dropping its id from the queue would leave a record saying "queued" that no worker will ever
        run: rq leaves that only when a worker dies between an ``LPOP`` and starting the job (Redis < 6.2),
        and the Enqueuer heals it (tests/integration/test_enqueuer_orphans.py); a crash here is the usual
        kind, the job gone with its worker and Redis, so only the scheduler and the sweeper bring it back."""
        queue = make_queue(self.world.stack.rt.redis)
        for job_id in queue.job_ids[:1]:
            job = Job.fetch(job_id, connection=self.world.stack.rt.redis, serializer=JSONSerializer)
            job.delete()
            return job
        return None

    @rule(seconds=st.sampled_from([0.3, 1.0, 5.0, 30.0, 120.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    @rule()
    def quiesce(self) -> None:
        """The gateway settles what is open; the system runs until still and must equal the gateway."""
        w = self.world
        w.sim.clear_faults()
        for _ in range(40):
            self._settle_open_at_the_gateway()
            w.clock.advance(120)
            w.stack.drain()
            if self._all_final() and w.stack.idle():
                break
        report = check(load_snapshot(w.stack.rt.engine, w.sim, w.sink.deliveries()), scope=set(self.orders),
                       contradicted=self.contradicted | {r for r, o in self.refunds.items() if o in self.contradicted})
        assert report.ok, report.summary()

    def _settle_open_at_the_gateway(self) -> None:
        for no in self.orders:
            truth = self.world.sim.order(no)
            if truth is not None and truth["status"] == "PENDING":
                self.world.sim.complete_order(no, "SUCCESS", notify=False)
            for refund in (truth or {}).get("refunds", []):
                if refund["status"] == "REFUND_PENDING":
                    self.world.sim.complete_refund(refund["outRefundNo"], "REFUND_SUCCESS", notify=False)

    def _all_final(self) -> bool:
        states = self._states()
        return all(s in ORDER_FINAL | REFUND_FINAL for s, _ in states.values())

    def teardown(self) -> None:
        if self.orders:
            self.quiesce()

    # -- invariants -----------------------------------------------------------------------------

    def _states(self) -> dict[str, tuple[str, Any]]:
        if not self.orders:
            return {}
        with read(self.world.stack.rt.engine) as conn:
            rows = conn.execute(sa.select(orders.c.id, orders.c.out_trade_no, orders.c.state, orders.c.amount_minor)
                                .where(orders.c.out_trade_no.in_(list(self.orders)))).all()
            ids = {r.id: r.out_trade_no for r in rows}
            refund_rows = conn.execute(sa.select(refunds.c.out_refund_no, refunds.c.order_id, refunds.c.state,
                                                 refunds.c.amount_minor)
                                       .where(refunds.c.order_id.in_(list(ids)))).all()
        out: dict[str, tuple[str, Any]] = {r.out_trade_no: (r.state, r) for r in rows}
        out.update({r.out_refund_no: (r.state, r) for r in refund_rows})
        return out

    @invariant()
    def states_are_legal_money_fits_and_finals_stay(self) -> None:
        self.world.steps += 1
        states = self._states()
        by_order: dict[int, list[Any]] = {}
        for ref, (state, row) in states.items():
            if ref in self.orders:
                assert state in set(OrderState), (ref, state)
            else:
                assert state in set(RefundState), (ref, state)
                by_order.setdefault(row.order_id, []).append(row)
            if ref in self.final:
                assert state == self.final[ref], f"{ref} left final state {self.final[ref]} for {state}"
            elif state in ORDER_FINAL | REFUND_FINAL:
                self.final[ref] = state
        paid = {row.id: (row.amount_minor if state == "SUCCESS" else 0) for ref, (state, row) in states.items()
                if ref in self.orders}
        for order_id, rows in by_order.items():
            committed = sum(r.amount_minor for r in rows if r.state != "REFUND_FAILED")
            succeeded = sum(r.amount_minor for r in rows if r.state == "REFUND_SUCCESS")
            assert succeeded <= paid[order_id] and committed <= paid[order_id], (order_id, committed, paid)

    @invariant()
    def each_effect_happens_at_most_once_at_the_gateway(self) -> None:
        if not self.orders:
            return
        ledger = self.world.sim.ledger()
        for no in self.orders:
            assert ledger["orders"].get(no, 0) <= 1, (no, ledger["orders"].get(no))
        for no in self.refunds:
            assert ledger["refunds"].get(no, 0) <= 1, (no, ledger["refunds"].get(no))


def _call(job: Job) -> None:
    """Run a queued job's function here, as a worker would (by its stable path in ``worker.jobs``)."""
    name = (job.func_name or "").rsplit(".", 1)[-1]
    getattr(jobs, name)(*job.args)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("model")
    redis = RedisServer(root / "redis").start()
    world = World(root, redis.url)
    try:
        yield world
    finally:
        world.stop()
        redis.kill9()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_system_behaves_like_the_model(world: World) -> None:
    """Any interleaving of the rules keeps the invariants, and at rest the store equals the gateway."""
    examples, steps = model_budget()
    PaymentModel.world = world
    # In CI the exploration is derandomized, so a red run is reproducible by rerunning it; an open defect
    # found by a random run is tracked in the issue notes (see tests/reliability/README.md), not hidden.
    run_state_machine_as_test(PaymentModel, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=os.environ.get("CI") == "true",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    note(f"model: {world.examples} examples, {world.steps} checked steps ({examples} x {steps} budget)")
