"""A send that Checus took but whose answer was unreadable is sent again while Checus's query lags, and the
repeat meets each reading of WIRE.md §25 questions 5-6 (the simulator's ``repeat_answer``): the first
answer replayed, ORDER_REPEAT with or without the record, or another refusal. Under every one the record
must end as Checus says, created once, and never pass through a failed state: a refused or repeated
resend is not proof that the first send failed.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.devtools.demo.stack import EmbeddedStack
from worker.flows import refunding

from .simctl import SimControl
from .test_send_regressions import _order, _paid, _pay, _refund, _states, stack  # noqa: F401 - stack is a fixture

MODES = ["replay", "repeat_with_data", "repeat_without_data", "reject:PARAMS_INVALID"]


@pytest.mark.parametrize("mode", MODES)
def test_a_created_order_sent_again_ends_as_checus_says(stack: EmbeddedStack, mode: str) -> None:  # noqa: F811
    sim = SimControl(stack.sim.base_url)
    no = "RA_ORDER"
    lag = {no: 4 * stack.rt.timers.not_found_grace + 1}
    sim.set_faults({"endpoints": {"orderAndPay": {"no_code_rate": 1}}, "hide_from_query": lag})
    assert _pay(stack, no).state == "UNKNOWN"
    assert sim.order(no) is not None  # Checus took it; the answer said nothing
    sim.set_faults({"hide_from_query": lag, "repeat_answer": mode})
    assert stack.settle(lambda: int(sim.ledger()["calls"].get("orderAndPay", 0)) >= 2, timeout=20), \
        "the unanswered create was never sent again"
    assert sim.ledger()["codes"]["orderAndPay"].get(f"repeat:{mode}", 0) >= 1
    assert stack.settle(lambda: _order(stack, no).state == "PENDING", timeout=30)
    assert sim.complete_order(no, "SUCCESS") == 200
    assert stack.settle(lambda: _order(stack, no).state == "SUCCESS", timeout=20)
    assert "FAILED" not in _states(stack, "order", _order(stack, no).id)
    assert sim.ledger()["orders"] == {no: 1}


@pytest.mark.parametrize("mode", MODES)
def test_a_created_refund_sent_again_ends_as_checus_says(stack: EmbeddedStack, mode: str) -> None:  # noqa: F811
    sim = SimControl(stack.sim.base_url)
    _paid(stack, "RA_PAID")
    lagging_query = {"error_rate": 1, "error_code": "ORDER_NOT_EXIST"}  # Checus's refund query lags
    sim.set_faults({"endpoints": {"refund": {"no_code_rate": 1}, "refundQuery": lagging_query}})
    refund = stack.service.refund("RA_PAID", Decimal("40.00"), out_refund_no="RA_REFUND").refund
    refunding.submit_refund(stack.rt, refund.id)  # sent here, not by a drain that could also resend it
    assert sim.refund("RA_REFUND") is not None  # Checus took it; the answer said nothing
    sim.set_faults({"endpoints": {"refundQuery": lagging_query}, "repeat_answer": mode})
    assert stack.settle(lambda: int(sim.ledger()["calls"].get("refund", 0)) >= 2, timeout=20), \
        "the unanswered refund was never sent again"
    assert sim.ledger()["codes"]["refund"].get(f"repeat:{mode}", 0) >= 1
    assert _refund(stack, "RA_REFUND").state != "REFUND_FAILED"
    with pytest.raises(Exception, match="exceeds_refundable"):  # its 40.00 is still taken
        stack.service.refund("RA_PAID", Decimal("61.00"), out_refund_no="RA_REFUND_2")
    sim.clear_faults()
    assert sim.complete_refund("RA_REFUND", "REFUND_SUCCESS") == 200
    assert stack.settle(lambda: _refund(stack, "RA_REFUND").state == "REFUND_SUCCESS", timeout=30)
    assert "REFUND_FAILED" not in _states(stack, "refund", _refund(stack, "RA_REFUND").id)
    assert sim.ledger()["refunds"] == {"RA_REFUND": 1}
