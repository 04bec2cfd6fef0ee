"""The gateway-answer matrix: every call × every answer Checus may give × first send or resend ×
lock free or busy × a concurrent writer (compare-and-set stale), on the real stack.

The simulator is the gateway's truth; ``gateway_proxy`` decides what the client reads (see its
docstring for the answer classes). Notifications are off, so every outcome is settled by query,
as the rules require. Each cell states the rules independently of the code's tables:

- **nothing guessed**: right after the answer, a record is final only if the answer was read and
  said so, or it is a definitive refusal of a send known to be the first (and then Checus has no
  record of it). An unreadable answer, a repeat, or any refusal of a resend leaves it open.
- **nothing lost**: once the gateway answers truthfully again, the record converges to what the
  gateway holds (a record the gateway holds is never FAILED here; one it never took is never SUCCESS).
- **never backwards**: a record a concurrent writer moved to a final state during the call stays there.
- **money**: Σ open and paid refunds ≤ the payment; at most one refund of a payment is in flight.
- **the lock only saves effort**: the same rules hold with the order's Redis lock held by another job.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from redis import Redis

from worker.devtools.demo.redis_server import RedisServer
from worker.devtools.demo.stack import EmbeddedStack
from worker.flows import payments, polls, refunding
from worker.runtime import utc_now
from worker.service_errors import OutcomeUnknown, Refused, ServiceError
from worker.store.db import read
from worker.store.repo import find_order, find_refund, refunds_of
from worker.store.schema import orders

from . import gateway_proxy as gp
from .conftest import note
from .simctl import SimControl

FINAL_ORDER = {"SUCCESS", "FAILED", "CLOSED"}
FINAL_REFUND = {"REFUND_SUCCESS", "REFUND_FAILED"}
IN_FLIGHT = {"UNKNOWN", "REFUND_PENDING"}
SEND_ANSWERS = (gp.PASS, *gp.UNREADABLE, gp.REJECTED, gp.REPEAT_WITH_DATA, gp.REPEAT_WITHOUT_DATA)
REFUND_ANSWERS = (*SEND_ANSWERS, gp.RETRY_LATER)
QUERY_ANSWERS = (gp.PASS, gp.NOT_FOUND, gp.REJECTED, *gp.UNREADABLE)
REMOVE_ANSWERS = (gp.PASS, gp.REJECTED, *gp.UNREADABLE)
RESULTS: dict[str, int] = {"cells": 0, "passed": 0}
_numbers = itertools.count(1)


@dataclass
class Lab:
    stack: EmbeddedStack
    proxy: gp.GatewayProxy
    sim: SimControl
    offset: list[float] = field(default_factory=lambda: [0.0])

    @property
    def rt(self) -> Any:
        return self.stack.rt

    def later(self, seconds: float) -> None:
        self.offset[0] += seconds

    def order(self, no: str) -> Any:
        with read(self.rt.engine) as conn:
            return find_order(conn, no)

    def refund(self, no: str) -> Any:
        with read(self.rt.engine) as conn:
            return find_refund(conn, no)

    def next_order_id(self) -> int:
        with read(self.rt.engine) as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(orders.c.id), 0))).scalar_one()) + 1

    def paid_order(self, no: str) -> Any:
        result = self.stack.service.create_card_payment(
            out_trade_no=no, amount=Decimal("100.00"), currency="USD", user_id="m", subject="s",
            front_callback_url="https://shop.test/r")
        assert result.state == "PENDING"
        assert self.sim.complete_order(no, "SUCCESS", notify=False) == 200
        self.poll_until_success(no)
        return self.order(no)

    def poll_until_success(self, no: str) -> None:
        """A cell's set-up, not under test: the gateway holds the order SUCCESS, and a poll reads it.

        Polled again when a poll went unanswered: the client's read timeout here is 0.5 s, which a
        busy CI machine's simulator has been seen to miss (643 ms), and an unanswered poll rightly
        changes nothing."""
        for _ in range(5):
            polls.poll_order(self.rt, self.order(no).id)
            if self.order(no).state == "SUCCESS":
                return
        assert self.order(no).state == "SUCCESS"

    def saved_card(self, user: str) -> int:
        result = self.stack.service.create_card_payment(
            out_trade_no=f"{user}_FIRST", amount=Decimal("5.00"), currency="USD", user_id=user, subject="s",
            front_callback_url="https://shop.test/r", save_card=True)
        assert self.sim.complete_order(f"{user}_FIRST", "SUCCESS", notify=False) == 200
        self.poll_until_success(f"{user}_FIRST")
        [token] = self.stack.service.list_tokens(user, sync=True)
        assert token.status == "Activated", result
        return int(token.id)

    def settle(self, settled: Callable[[], bool], *, truth: Callable[[], None]) -> bool:
        """The gateway answers truthfully and settles what it holds; time runs until ``settled``."""
        self.proxy.clear()
        for _ in range(25):
            truth()
            self.later(20)
            self.stack.drain()
            if settled():
                return True
            time.sleep(0.01)
        return settled()


@pytest.fixture(scope="module")
def lab(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    db = tmp_path_factory.mktemp("matrix") / "store.db"
    Redis.from_url(redis_server.url).flushall()  # only this module's tests run meanwhile: none flushes it
    stack = EmbeddedStack(redis_url=redis_server.url, database_url=f"sqlite:///{db}", time_scale=0.002).start()
    proxy = gp.GatewayProxy(stack.sim.base_url, stack.platform.private_key)
    offset = [0.0]
    stack.rt.clock = lambda: utc_now() + timedelta(seconds=offset[0])
    stack.settings = stack.settings.with_overrides(gateway_url=proxy.base_url, http_read_timeout=gp.READ_TIMEOUT,
                                                   notify_base_url=None)
    stack.rt.settings = stack.settings
    stack.rt.__dict__.pop("client", None)
    try:
        yield Lab(stack, proxy, SimControl(stack.sim.base_url), offset)
    finally:
        proxy.stop()
        stack.stop()
        note(f"gateway-answer matrix: {RESULTS['cells']} cells, {RESULTS['passed']} passed")


class HeldLock:
    """Another job (a poll, another refund) holds the order's Redis lock during the call."""

    def __init__(self, lab: Lab, order_id: int, busy: bool) -> None:
        self.lock = lab.rt.redis.lock(f"checus:lock:order:{order_id}", timeout=60) if busy else None

    def __enter__(self) -> None:
        if self.lock is not None:
            assert self.lock.acquire(blocking=False)

    def __exit__(self, *_: object) -> None:
        if self.lock is not None:
            self.lock.release()


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ServiceError as exc:
        return exc


def _cells(calls: tuple[str, ...], answers: tuple[gp.Class, ...], *, sends: bool) -> list[Any]:
    cells = []
    for call, answer, resend, busy, stale in itertools.product(calls, answers, (False, True) if sends else (False,),
                                                               (False, True), (False, True)):
        if stale and not answer.taken:
            continue  # a request the gateway never received has no concurrent truth to race with
        name = f"{call}-{answer.name}-{'resend' if resend else 'first'}-{'busy' if busy else 'free'}" \
               f"{'-stale' if stale else ''}"
        cells.append(pytest.param(call, answer, resend, busy, stale, id=name))
    return cells


def _count(passed: Callable[[], None]) -> None:
    RESULTS["cells"] += 1
    passed()
    RESULTS["passed"] += 1


# -- sends: /orderAndPay (hosted and token) --------------------------------------------------

@pytest.mark.parametrize(("call", "answer", "resend", "busy", "stale"),
                         _cells(("hosted", "token"), SEND_ANSWERS, sends=True))
def test_a_payment_send(lab: Lab, call: str, answer: gp.Class, resend: bool, busy: bool, stale: bool) -> None:
    _count(lambda: _payment_cell(lab, call, answer, resend=resend, busy=busy, stale=stale))


def _payment_cell(lab: Lab, call: str, answer: gp.Class, *, resend: bool, busy: bool, stale: bool) -> None:
    no = f"M{next(_numbers)}"
    user = f"u{no}"
    token = lab.saved_card(user) if call == "token" else None

    def pay() -> Any:
        if token is None:
            return lab.stack.service.create_card_payment(
                out_trade_no=no, amount=Decimal("30.00"), currency="USD", user_id=user, subject="s",
                front_callback_url="https://shop.test/r")
        return lab.stack.service.pay_with_token(out_trade_no=no, user_id=user, token=token, amount=Decimal("30.00"),
                                                currency="USD", country="US", subject="s", client_ip="127.0.0.1",
                                                user_agent="matrix")

    def concurrent_writer(endpoint: str, number: str) -> None:
        if endpoint == "orderAndPay" and number == no and lab.order(no) is not None:
            lab.proxy.on_taken = None
            lab.sim.complete_order(no, "SUCCESS", notify=False)
            polls._poll_order(lab.rt, lab.order(no).id)  # another worker, deciding without the lock

    if resend:  # the first send reached Checus and its answer was lost; Checus's query lags
        lab.proxy.plan("orderAndPay", no, gp.RESET)
        first = _outcome(pay)
        assert lab.order(no).state == "UNKNOWN", first
        lab.later(2 * lab.rt.timers.not_found_grace)
        lab.proxy.plan("orderQuery", no, gp.NOT_FOUND)
        polls.poll_order(lab.rt, lab.order(no).id)
        assert lab.order(no).state == "CREATED" and lab.order(no).ledger.sends == 1
    lab.proxy.plan("orderAndPay", no, answer)
    if stale:
        lab.proxy.on_taken = concurrent_writer
    lock_id = lab.order(no).id if resend else lab.next_order_id()  # the id the new order gets
    with HeldLock(lab, lock_id, busy):
        result = _outcome(lambda: payments.resubmit_order(lab.rt, lab.order(no).id)) if resend else _outcome(pay)
    lab.proxy.on_taken = None
    order = lab.order(no)
    truth = lab.sim.order(no)
    _no_order_guessed(answer, resend=resend, stale=stale, state=order.state if order else None, result=result,
                      truth=truth)

    def gateway_settles() -> None:
        held = lab.sim.order(no)
        if held is not None and held["status"] == "PENDING":
            lab.sim.complete_order(no, "SUCCESS", notify=False)

    lab.settle(lambda: lab.order(no) is None or lab.order(no).state in FINAL_ORDER, truth=gateway_settles)
    _converged_order(lab, no)


def _no_order_guessed(answer: gp.Class, *, resend: bool, stale: bool, state: str | None, result: Any,
                      truth: dict[str, Any] | None) -> None:
    if stale:
        assert state == "SUCCESS", (state, result)  # a concurrent writer's final state never goes backwards
        return
    if answer is gp.PASS and not resend:  # (a resend's own answer is Checus's answer to a repeat)
        # what Checus said, or PENDING until a query confirms a final status the create answer hinted at
        assert truth is not None and state in {"PENDING", truth["status"]}, (state, truth, result)
        return
    if answer is gp.REJECTED and not resend:  # a definitive refusal of a send known to be the first
        assert truth is None
        assert isinstance(result, Refused) or state == "FAILED", (state, result)
        return
    assert state not in FINAL_ORDER, (answer.name, state, result)  # unread, a repeat, or a refused resend
    if isinstance(result, ServiceError):  # an error says "unknown, being resolved" and names the record
        assert isinstance(result, OutcomeUnknown) and result.ref, result


def _converged_order(lab: Lab, no: str) -> None:
    order, truth = lab.order(no), lab.sim.order(no)
    if truth is None:
        assert order is None or order.state == "FAILED", order
    else:
        assert order is not None and order.state == truth["status"], (order, truth)


# -- sends: /refund --------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "answer", "resend", "busy", "stale"), _cells(("refund",), REFUND_ANSWERS, sends=True))
def test_a_refund_send(lab: Lab, call: str, answer: gp.Class, resend: bool, busy: bool, stale: bool) -> None:
    _count(lambda: _refund_cell(lab, answer, resend=resend, busy=busy, stale=stale))


def _refund_cell(lab: Lab, answer: gp.Class, *, resend: bool, busy: bool, stale: bool) -> None:
    no = f"R{next(_numbers)}"
    order = lab.paid_order(f"{no}_PAY")
    view = lab.stack.service.refund(order.out_trade_no, Decimal("60.00"), out_refund_no=no)
    refund_id = view.refund.id

    def concurrent_writer(endpoint: str, number: str) -> None:
        if endpoint == "refund" and number == no:
            lab.proxy.on_taken = None
            lab.sim.complete_refund(no, "REFUND_SUCCESS", notify=False)
            polls._poll_refund(lab.rt, refund_id)

    if resend:
        lab.proxy.plan("refund", no, gp.RESET)
        refunding.submit_refund(lab.rt, refund_id)
        assert lab.refund(no).state == "UNKNOWN"
        lab.later(2 * lab.rt.timers.not_found_grace)
        lab.proxy.plan("refundQuery", no, gp.NOT_FOUND)
        polls.poll_refund(lab.rt, refund_id)
        assert lab.refund(no).state == "CREATED" and lab.refund(no).ledger.sends == 1
    lab.proxy.plan("refund", no, answer)
    if stale:
        lab.proxy.on_taken = concurrent_writer
    with HeldLock(lab, order.id, busy):
        result = _outcome(lambda: refunding.submit_refund(lab.rt, refund_id))
    lab.proxy.on_taken = None
    state, truth = lab.refund(no).state, lab.sim.refund(no)
    _money_holds(lab, order)
    if stale:
        assert state == "REFUND_SUCCESS", (state, result)
    elif answer is gp.PASS and not resend:
        assert truth is not None and state == truth["status"], (state, truth)
    elif answer is gp.REJECTED and not resend:
        assert truth is None and state == "REFUND_FAILED", (state, result)
    else:  # unread, a repeat, "not now", or a refused resend: nothing final, the 60.00 stays taken
        assert state not in FINAL_REFUND, (answer.name, state, result)
        with pytest.raises(Refused, match="exceeds_refundable"):
            lab.stack.service.refund(order.out_trade_no, Decimal("60.00"), out_refund_no=f"{no}_MORE")

    def gateway_settles() -> None:
        held = lab.sim.refund(no)
        if held is not None and held["status"] == "REFUND_PENDING":
            lab.sim.complete_refund(no, "REFUND_SUCCESS", notify=False)

    lab.settle(lambda: lab.refund(no).state in FINAL_REFUND, truth=gateway_settles)
    _money_holds(lab, order)
    refund, truth = lab.refund(no), lab.sim.refund(no)
    if truth is None:
        assert refund.state == "REFUND_FAILED", refund
    else:
        assert refund.state == truth["status"], (refund, truth)


def _money_holds(lab: Lab, order: Any) -> None:
    with read(lab.rt.engine) as conn:
        ours = refunds_of(conn, order.id)
    taken = sum((r.amount for r in ours if r.state != "REFUND_FAILED"), Decimal(0))
    assert taken <= order.amount, ours
    assert sum(1 for r in ours if r.state in IN_FLIGHT) <= 1, ours
    theirs = [lab.sim.refund(r.out_refund_no) for r in ours]
    assert sum((Decimal(str(t["refundAmount"])) for t in theirs if t and t["status"] != "REFUND_FAILED"),
               Decimal(0)) <= order.amount


# -- queries: /orderQuery and /refundQuery ----------------------------------------------------

def _query_cells() -> list[Any]:
    cells = []
    for call, statuses in (("orderQuery", ("SUCCESS", "FAILED", "CLOSED")), ("refundQuery", ("SUCCESS", "FAILED"))):
        for param, status in itertools.product(_cells((call,), QUERY_ANSWERS, sends=False), statuses):
            cells.append(pytest.param(*param.values, status, id=f"{param.id}-{status}"))
    return cells


@pytest.mark.parametrize(("call", "answer", "resend", "busy", "stale", "status"), _query_cells())
def test_a_query(lab: Lab, call: str, answer: gp.Class, resend: bool, busy: bool, stale: bool, status: str) -> None:
    _count(lambda: _query_cell(lab, call, answer, busy=busy, stale=stale, status=status))


def _query_cell(lab: Lab, call: str, answer: gp.Class, *, busy: bool, stale: bool, status: str) -> None:
    no = f"Q{next(_numbers)}"
    get: Callable[[], Any]
    poll: Callable[[], str]
    if call == "orderQuery":
        lab.stack.service.create_card_payment(out_trade_no=no, amount=Decimal("10.00"), currency="USD", user_id="q",
                                              subject="s", front_callback_url="https://shop.test/r")
        record, order_id = lab.order(no), lab.order(no).id
        assert record.state == "PENDING"
        truth = status
        get, poll = (lambda: lab.order(no)), (lambda: polls.poll_order(lab.rt, order_id))
        complete: Callable[[str], int] = lambda s: lab.sim.complete_order(no, s, notify=False)  # noqa: E731
    else:
        order = lab.paid_order(f"{no}_PAY")
        refund_id = lab.stack.service.refund(order.out_trade_no, Decimal("10.00"), out_refund_no=no).refund.id
        refunding.submit_refund(lab.rt, refund_id)
        order_id, truth = order.id, "REFUND_SUCCESS" if status == "SUCCESS" else "REFUND_FAILED"
        assert lab.refund(no).state == "REFUND_PENDING"
        get, poll = (lambda: lab.refund(no)), (lambda: polls.poll_refund(lab.rt, refund_id))
        complete = lambda s: lab.sim.complete_refund(no, s, notify=False)  # noqa: E731
    before = get().state
    assert complete(truth) == 200
    lab.proxy.plan(call, no, answer)
    if stale:  # another worker decides on a fresher answer while this one's question is out
        lab.proxy.on_taken = lambda endpoint, number: _stale_query(lab, call, endpoint, number, no)
    with HeldLock(lab, order_id, busy):
        _outcome(poll)
    lab.proxy.on_taken = None
    after = get().state
    if busy:  # the poll asked nothing and comes back as the lock runs out
        assert after == before
    elif stale or answer is gp.PASS:  # the fresher answer (the other worker's, or this one's) decided
        assert after == truth, after
    else:  # not found, refused, or unread: a query never makes a state up
        assert after == before, (answer.name, after)
    assert lab.settle(lambda: get().state == truth, truth=lambda: None), (get().state, truth)


def _stale_query(lab: Lab, call: str, endpoint: str, number: str, no: str) -> None:
    if endpoint == call and number == no:
        lab.proxy.on_taken = None
        if call == "orderQuery":
            polls._poll_order(lab.rt, lab.order(no).id)
        else:
            polls._poll_refund(lab.rt, lab.refund(no).id)


# -- /removePaymentToken ---------------------------------------------------------------------

@pytest.mark.parametrize("answer", REMOVE_ANSWERS, ids=[a.name for a in REMOVE_ANSWERS])
def test_a_token_removal(lab: Lab, answer: gp.Class) -> None:
    _count(lambda: _removal_cell(lab, answer))


def _removal_cell(lab: Lab, answer: gp.Class) -> None:
    user = f"t{next(_numbers)}"
    token = lab.saved_card(user)
    lab.proxy.plan("removePaymentToken", user, answer)
    result = _outcome(lambda: lab.stack.service.remove_token(user, token))
    [saved] = lab.stack.service.list_tokens(user, sync=False)
    if answer is gp.PASS:
        assert saved.status == "Deleted", result
    elif answer is gp.REJECTED:
        assert isinstance(result, Refused) and saved.status == "Activated", result
    else:  # it may have happened: the card is not offered, and the merchant is told it is being resolved
        assert isinstance(result, OutcomeUnknown) and saved.status != "Activated", (result, saved)
    lab.proxy.clear()
    [synced] = lab.stack.service.list_tokens(user, sync=True)
    expected = "Deleted" if answer.taken else "Activated"
    assert synced.status == expected, (answer.name, synced.status)


