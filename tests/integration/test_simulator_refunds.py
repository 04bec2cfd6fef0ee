"""Refunds on the simulator: the refund rules, duplicates, completion, queries and notifications."""

from __future__ import annotations

import re
from contextlib import closing
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.conftest import conform
from tests.openapi import validate_notification
from tests.support.notification_sink import NotificationSink
from tests.support.simkit import Answer, MerchantCaller, direct_order, hosted_order, own_simulator, wait_until
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair


@pytest.fixture
def paid(merchant: MerchantCaller) -> str:
    """A 100.00 USD order, paid."""
    assert merchant.call("orderAndPay", direct_order("PAID", totalAmount="100.00")).data["status"] == "SUCCESS"
    return "PAID"


def refund(merchant: MerchantCaller, out_refund_no: str, amount: Any, **extra: Any) -> Answer:
    data = {"outRefundNo": out_refund_no, "refundAmount": amount, "refundCurrency": "USD", "outTradeNo": "PAID"}
    return merchant.call("refund", {**data, **extra})


def finish(web: httpx.Client, out_refund_no: str, status: str | None = "REFUND_SUCCESS", **extra: Any) -> Any:
    body = {"status": status, **extra} if status else extra
    response = web.post(f"/__sim/refunds/{out_refund_no}/complete", json=body)
    response.raise_for_status()
    return response.json()


def test_a_refund_is_accepted_as_pending(sim: RunningSimulator, merchant: MerchantCaller, paid: str) -> None:
    answer = refund(merchant, "R_1", "30.00", comments="customer changed mind")
    assert answer.code == "APPLY_SUCCESS"
    data = answer.data
    assert (data["outRefundNo"], data["status"]) == ("R_1", "REFUND_PENDING")
    assert re.fullmatch(r"\d{14}TI\d{12}", data["refundTradeNo"])
    assert data["tradeOrderNo"] == sim.state.order(paid).trade_order_no  # type: ignore[union-attr]
    assert sim.state.ledger()["refunds"] == {"R_1": 1}


def test_a_refund_can_name_the_order_by_trade_token(merchant: MerchantCaller, paid: str) -> None:
    token = merchant.call("orderQuery", {"outTradeNo": paid}).data["tradeToken"]
    data = {"outRefundNo": "R_TT", "refundAmount": 1, "refundCurrency": "USD", "tradeToken": token}
    assert merchant.call("refund", data).code == "APPLY_SUCCESS"


def test_only_one_refund_at_a_time(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    refund(merchant, "R_1", 10)
    answer = refund(merchant, "R_2", 10)
    assert (answer.code, answer.body["msg"]) == ("REFUND_FAILED", "Currently in refund process")
    finish(web, "R_1")
    assert refund(merchant, "R_2", 10).code == "APPLY_SUCCESS"


def test_partial_refunds_add_up_to_at_most_the_paid_amount(
    merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    refund(merchant, "R_1", "30.00")
    finish(web, "R_1")
    refund(merchant, "R_2", "50.00")
    finish(web, "R_2")
    over = refund(merchant, "R_3", "20.01")
    assert (over.code, over.body["msg"]) == ("AMOUNT_INVALID", "refundAmount exceeds the refundable amount")
    assert refund(merchant, "R_3", "20.00").code == "APPLY_SUCCESS"
    finish(web, "R_3")
    assert refund(merchant, "R_4", "0.01").code == "AMOUNT_INVALID"
    truth = web.get(f"/__sim/orders/{paid}").json()
    assert (truth["refundedAmount"], len(truth["refunds"])) == (100, 3)


def test_a_failed_refund_frees_its_amount(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    refund(merchant, "R_1", 100)
    finish(web, "R_1", "REFUND_FAILED")
    assert refund(merchant, "R_2", 100).code == "APPLY_SUCCESS"


def test_a_pending_refund_counts_against_the_refundable_amount(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    """With the one-at-a-time rule relaxed (another code), pending refunds still count."""
    with own_simulator(
        merchant_keys, platform_keys, inspect=conform, refund_amount_code="PARAMS_INVALID"
    ) as (_, caller):
        caller.call("orderAndPay", direct_order("PAID", totalAmount="100.00"))
        assert refund(caller, "R_1", "100.01").code == "PARAMS_INVALID"


def test_duplicate_out_refund_no_replays_or_repeats(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, paid: str
) -> None:
    first = refund(merchant, "R_DUP", "25.00")
    finish(web, "R_DUP")
    replay = refund(merchant, "R_DUP", 25)
    assert replay.code == "APPLY_SUCCESS"
    assert replay.data == {**first.data, "status": "REFUND_SUCCESS"}
    different = refund(merchant, "R_DUP", "26.00")
    assert different.code == "ORDER_REPEAT"
    assert different.data["refundTradeNo"] == first.data["refundTradeNo"]
    assert sim.state.ledger()["refunds"] == {"R_DUP": 1}


def test_a_replay_while_pending_is_not_blocked_by_itself(merchant: MerchantCaller, paid: str) -> None:
    first = refund(merchant, "R_P", 5)
    assert refund(merchant, "R_P", 5).data == first.data


def test_refund_of_an_unpaid_order_is_refused(merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", hosted_order("UNPAID"))
    data = {"outRefundNo": "R_U", "refundAmount": 1, "refundCurrency": "USD", "outTradeNo": "UNPAID"}
    answer = merchant.call("refund", data)
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", "order status not refundable")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"outTradeNo": "NOPE"}, "ORDER_NOT_EXIST"),
        ({"outTradeNo": None}, "PARAMS_INVALID"),
        ({"refundCurrency": "EUR"}, "CURRENCY_INVALID"),
        ({"refundCurrency": "QQQ"}, "CURRENCY_INVALID"),
        ({"refundAmount": "1.001"}, "AMOUNT_INVALID"),
        ({"refundAmount": 0}, "PARAMS_INVALID"),
        ({"refundAmount": "-1"}, "PARAMS_INVALID"),
        ({"outRefundNo": None}, "PARAMS_INVALID"),
        ({"refundNotifyUrl": "not a url"}, "PARAMS_INVALID"),
    ],
)
def test_refund_validation(merchant: MerchantCaller, paid: str, change: dict[str, Any], code: str) -> None:
    data = {"outRefundNo": "R_V", "refundAmount": "1.00", "refundCurrency": "USD", "outTradeNo": paid}
    answer = merchant.call("refund", {k: v for k, v in {**data, **change}.items() if v is not None})
    assert answer.code == code
    assert "data" not in answer.body


def test_refund_query_by_either_number(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    created = refund(merchant, "R_Q", "12.5").data
    pending = merchant.call("refundQuery", {"outRefundNo": "R_Q"}).data
    assert pending == {
        "outRefundNo": "R_Q",
        "refundTradeNo": created["refundTradeNo"],
        "outTradeNo": paid,
        "refundAmount": Decimal("12.50"),
        "refundCurrency": "USD",
        "status": "REFUND_PENDING",
        "resultMsg": "",
    }
    finish(web, "R_Q")
    done = merchant.call("refundQuery", {"refundTradeNo": created["refundTradeNo"]}).data
    assert done["status"] == "REFUND_SUCCESS"
    assert done["refundFinishTime"].endswith("Z")
    assert merchant.call("refundQuery", {"outRefundNo": "NOPE"}).code == "ORDER_NOT_EXIST"
    assert merchant.call("refundQuery", {}).code == "PARAMS_INVALID"


def test_completion_notifies_the_refund_url(
    merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink, paid: str
) -> None:
    refund(merchant, "R_N", "40", refundNotifyUrl=sink.url)
    finish(web, "R_N")
    body = sink.wait_for(1)[0].body
    assert (body["code"], body["msg"], body["notifyType"], body["merchantNo"]) == (
        "APPLY_SUCCESS",
        "Success.",
        "REFUND",
        "MERCHANT_TEST",
    )
    data = body["data"]
    assert (data["outRefundNo"], data["outTradeNo"], data["refundAmount"], data["status"]) == (
        "R_N",
        paid,
        Decimal("40.00"),
        "REFUND_SUCCESS",
    )
    validate_notification("refund", body)


def test_a_comments_trigger_fails_the_refund(
    merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink, paid: str
) -> None:
    refund(merchant, "R_F", 10, comments="REFUND_FAILED", refundNotifyUrl=sink.url)
    assert finish(web, "R_F", None)["status"] == "REFUND_FAILED"
    body = sink.wait_for(1)[0].body
    assert (body["code"], body["data"]["status"]) == ("REFUND_FAILED", "REFUND_FAILED")
    query = merchant.call("refundQuery", {"outRefundNo": "R_F"}).data
    assert (query["status"], query["resultMsg"]) == ("REFUND_FAILED", "Refund failed.")


def test_control_refund_errors(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    refund(merchant, "R_C", 1)
    assert web.post("/__sim/refunds/NOPE/complete", json={}).status_code == 404
    assert web.post("/__sim/refunds/R_C/complete", json={"status": "SUCCESS"}).status_code == 400
    finish(web, "R_C", notify=False)
    assert web.post("/__sim/refunds/R_C/complete", json={"status": "REFUND_FAILED"}).status_code == 409
    assert web.get("/__sim/refunds/R_C").json()["status"] == "REFUND_SUCCESS"


def test_refunds_can_complete_by_themselves(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with (
        closing(NotificationSink(platform_keys.public_key)) as receiver,
        own_simulator(
            merchant_keys,
            platform_keys,
            inspect=conform,
            time_scale=0.001,
            refund_auto_complete_seconds=30,
            default_refund_notify_url=receiver.url,
        ) as (_, caller),
    ):
        caller.call("orderAndPay", direct_order("PAID", totalAmount="100.00"))
        refund(caller, "R_A", 10)
        refund(caller, "R_A", 10)
        assert receiver.wait_for(1)[0].body["data"]["status"] == "REFUND_SUCCESS"
        wait_until(lambda: caller.call("refundQuery", {"outRefundNo": "R_A"}).data["status"] == "REFUND_SUCCESS")


def test_auto_completion_follows_the_virtual_clock(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with own_simulator(merchant_keys, platform_keys, inspect=conform, refund_auto_complete_seconds=3600) as (_, caller):
        caller.call("orderAndPay", direct_order("PAID", totalAmount="100.00"))
        refund(caller, "R_V", 10, comments="REFUND_FAILED")
        caller.http.post("/__sim/clock/advance", json={"seconds": 3599}).raise_for_status()
        assert caller.call("refundQuery", {"outRefundNo": "R_V"}).data["status"] == "REFUND_PENDING"
        caller.http.post("/__sim/clock/advance", json={"seconds": 2}).raise_for_status()
        assert caller.call("refundQuery", {"outRefundNo": "R_V"}).data["status"] == "REFUND_FAILED"


def test_the_refund_window_closes(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    web.post("/__sim/clock/advance", json={"seconds": 181 * 86400}).raise_for_status()
    answer = refund(merchant, "R_OLD", 1)
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", "order is past the refund period")


def test_a_low_balance_refuses_refunds(merchant: MerchantCaller, web: httpx.Client, paid: str) -> None:
    web.put("/__sim/faults", json={"refund_insufficient_balance": True}).raise_for_status()
    assert refund(merchant, "R_LOW", 1).code == "REFUND_INSUFFICIENT_BALANCE"
    web.delete("/__sim/faults").raise_for_status()
    assert refund(merchant, "R_LOW", 1).code == "APPLY_SUCCESS"
