"""The adversary knobs: every reading of a repeated outTradeNo / outRefundNo, and answers without a code."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.integration.conftest import conform
from tests.support.simkit import Answer, MerchantCaller, direct_order, hosted_order, own_simulator
from worker.devtools.simulator.faults import NO_CODE_BODIES
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair


def faults(web: httpx.Client, plan: dict[str, Any]) -> None:
    web.put("/__sim/faults", json=plan).raise_for_status()


def refund(caller: MerchantCaller, no: str, amount: str = "10.00", **options: Any) -> Answer:
    data = {"outRefundNo": no, "refundAmount": Decimal(amount), "refundCurrency": "USD", "outTradeNo": "PAID"}
    return caller.call("refund", data, **options)


@pytest.fixture
def paid(merchant: MerchantCaller) -> str:
    assert merchant.call("orderAndPay", direct_order("PAID", totalAmount="100.00")).data["status"] == "SUCCESS"
    return "PAID"


def test_replay_is_the_default_and_keeps_today_s_answers(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    """orderAndPay: ORDER_REPEAT with the summary; refund: the stored answer again, with its current status."""
    assert web.get("/__sim/faults").json()["repeat_answer"] == "replay"
    again = merchant.call("orderAndPay", direct_order("PAID", totalAmount="100.00"))
    assert (again.code, again.data["status"]) == ("ORDER_REPEAT", "SUCCESS")
    first = refund(merchant, "R_1")
    assert refund(merchant, "R_1").body == first.body
    assert sim.state.ledger()["refunds"] == {"R_1": 1}


def test_repeat_with_data_answers_order_repeat_with_the_current_records(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    first = refund(merchant, "R_DATA")
    faults(web, {"repeat_answer": "repeat_with_data"})
    order = merchant.call("orderAndPay", direct_order("PAID", totalAmount="100.00"))
    assert (order.code, order.body["msg"]) == ("ORDER_REPEAT", "Duplicate order")
    assert order.data == {"outTradeNo": "PAID", "tradeToken": sim.state.order("PAID").trade_token,  # type: ignore[union-attr]
                          "status": "SUCCESS"}
    again = refund(merchant, "R_DATA")  # identical: "replay" would have answered APPLY_SUCCESS
    assert (again.code, again.data) == ("ORDER_REPEAT", first.data)
    ledger = sim.state.ledger()
    assert ledger["orders"] == {"PAID": 1} and ledger["refunds"] == {"R_DATA": 1}
    assert ledger["codes"]["refund"] == {"APPLY_SUCCESS": 1, "repeat:repeat_with_data": 1, "ORDER_REPEAT": 1}


def test_repeat_with_data_overrides_the_idempotent_replay_setting(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    with own_simulator(merchant_keys, platform_keys, inspect=conform, idempotent_order_replay=True) as (_, caller):
        data = hosted_order("IDEM_1")
        caller.call("orderAndPay", data)
        assert caller.call("orderAndPay", data).code == "APPLY_SUCCESS"
        caller.http.put("/__sim/faults", json={"repeat_answer": "repeat_with_data"}).raise_for_status()
        assert caller.call("orderAndPay", data).code == "ORDER_REPEAT"


def test_repeat_without_data_answers_order_repeat_alone(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    refund(merchant, "R_BARE")
    faults(web, {"repeat_answer": "repeat_without_data"})
    order = merchant.call("orderAndPay", direct_order("PAID", totalAmount="100.00"))
    again = refund(merchant, "R_BARE")
    assert order.body == {"code": "ORDER_REPEAT", "msg": "Duplicate order"}
    assert again.body == {"code": "ORDER_REPEAT", "msg": "Duplicate refund"}
    assert sim.state.refund("R_BARE") is not None and sim.state.ledger()["refunds"] == {"R_BARE": 1}


def test_reject_answers_another_code_and_changes_nothing(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    refund(merchant, "R_REJ")
    faults(web, {"repeat_answer": "reject:PARAMS_INVALID"})
    assert merchant.call("orderAndPay", direct_order("PAID", totalAmount="100.00")).body == {
        "code": "PARAMS_INVALID", "msg": "PARAMS_INVALID"}
    faults(web, {"repeat_answer": "reject:REFUND_FAILED"})
    assert refund(merchant, "R_REJ").code == "REFUND_FAILED"
    assert sim.state.order("PAID").status == "SUCCESS"  # type: ignore[union-attr]
    assert sim.state.refund("R_REJ").status == "REFUND_PENDING"  # type: ignore[union-attr]
    assert sim.state.ledger()["refunds"] == {"R_REJ": 1}


def test_a_first_send_is_never_touched_by_the_knob(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    faults(web, {"repeat_answer": "reject:PARAMS_INVALID"})
    assert refund(merchant, "R_NEW").code == "APPLY_SUCCESS"
    assert merchant.call("orderAndPay", hosted_order("NEW_1")).code == "APPLY_SUCCESS"


def repeat_codes(caller: MerchantCaller, count: int) -> list[tuple[str | None, bool]]:
    caller.http.put("/__sim/faults", json={"repeat_answer": "random"}).raise_for_status()
    data = hosted_order("RANDOM_1")
    return [(a.code, "data" in a.body) for a in (caller.call("orderAndPay", data) for _ in range(count))]


def test_random_draws_every_answer_repeatably_from_the_seed(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    runs = []
    for _ in range(2):
        with own_simulator(merchant_keys, platform_keys, inspect=conform, seed=11) as (running, caller):
            runs.append(repeat_codes(caller, 24))
            assert running.state.ledger()["orders"] == {"RANDOM_1": 1}
            counted = running.state.ledger()["codes"]["orderAndPay"]
            assert sum(n for code, n in counted.items() if code.startswith("repeat:")) == 23
    assert runs[0] == runs[1]
    first, repeats = runs[0][0], set(runs[0][1:])
    assert first == ("APPLY_SUCCESS", True)
    # replay and repeat_with_data both answer ORDER_REPEAT with data here (no idempotent replay configured)
    assert repeats == {("ORDER_REPEAT", True), ("ORDER_REPEAT", False), ("PARAMS_INVALID", False)}


@pytest.mark.parametrize("value", ["sometimes", "reject:", "reject:lower", "reject:APPLY_SUCCESS", 3, None])
def test_bad_repeat_answers_are_refused_in_one_line(web: httpx.Client, value: Any) -> None:
    response = web.put("/__sim/faults", json={"repeat_answer": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("repeat_answer must be") and "\n" not in error


# answers without a code


def test_no_code_rate_answers_a_body_without_code_after_the_request_took_effect(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    faults(web, {"endpoints": {"orderAndPay": {"no_code_rate": 1}, "refund": {"no_code_rate": 1}}})
    with capture_logs() as logs:
        order = merchant.call("orderAndPay", hosted_order("NOCODE_1"), check=False)
        refunded = refund(merchant, "R_NOCODE", check=False)
    for answer in (order, refunded):
        assert answer.status_code == 200 and answer.signature_ok
        assert answer.body in NO_CODE_BODIES and not answer.body.get("code")
    assert sim.state.order("NOCODE_1") is not None and sim.state.refund("R_NOCODE") is not None
    assert sim.state.ledger()["codes"]["orderAndPay"] == {"APPLY_SUCCESS": 2, "no_code": 1}
    assert sim.state.ledger()["codes"]["refund"] == {"APPLY_SUCCESS": 1, "no_code": 1}
    lines = [e for e in logs if e["event"] == "sim.request"]
    assert [(e["endpoint"], e["code"], e["no_code"]) for e in lines] == [
        ("orderAndPay", "APPLY_SUCCESS", True), ("refund", "APPLY_SUCCESS", True)]


def test_no_code_bodies_come_in_every_form_drawn_from_the_seed(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    runs = []
    for _ in range(2):
        with own_simulator(merchant_keys, platform_keys, seed=5) as (_, caller):
            caller.http.put("/__sim/faults", json={"endpoints": {"orderQuery": {"no_code_rate": 0.75}}})
            runs.append([caller.call("orderQuery", {"outTradeNo": "X"}).body for _ in range(40)])
    assert runs[0] == runs[1]
    seen = [b for b in runs[0] if b.get("code") != "ORDER_NOT_EXIST"]
    assert all(b in NO_CODE_BODIES for b in seen)
    assert {str(b) for b in seen} == {str(b) for b in NO_CODE_BODIES}
    assert len(seen) < 40  # some answers keep their code


def test_an_injected_error_is_not_also_stripped_of_its_code(merchant: MerchantCaller, web: httpx.Client) -> None:
    faults(web, {"endpoints": {"orderQuery": {"error_rate": 1, "no_code_rate": 1}}})
    assert merchant.call("orderQuery", {"outTradeNo": "X"}).code == "SYSTEM_ERROR"


def test_a_dropped_answer_is_not_counted_as_a_code_less_one(merchant: MerchantCaller, web: httpx.Client,
                                                            sim: RunningSimulator) -> None:
    faults(web, {"endpoints": {"orderAndPay": {"drop_rate": 1, "no_code_rate": 1}}})
    with pytest.raises(httpx.HTTPError):
        merchant.call("orderAndPay", hosted_order("DROP_NC"), check=False)
    assert "no_code" not in sim.state.ledger()["codes"]["orderAndPay"]
