"""Payments on the simulator: validation, the hosted cashier, direct triggers, queries, expiry."""

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
from tests.support.simkit import MerchantCaller, direct_order, hosted_order, own_simulator, wait_until
from worker.devtools.simulator.records import OrderStatus
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair


def control(web: httpx.Client, method: str, path: str, body: Any = None) -> httpx.Response:
    return web.request(method, f"/__sim{path}", json=body)


# creation and validation


def test_hosted_order_is_pending_with_a_cashier_redirect(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    answer = merchant.call("orderAndPay", hosted_order("HOSTED_1"))
    assert answer.code == "APPLY_SUCCESS"
    assert answer.body["msg"] == "Success."
    assert answer.data["status"] == "PENDING"
    assert answer.data["outTradeNo"] == "HOSTED_1"
    assert re.fullmatch(r"T\d{8}\d{14}", answer.data["tradeToken"])
    assert answer.data["redirectUrl"] == f"{sim.base_url}/cashier/{answer.data['tradeToken']}"
    assert sim.state.ledger()["orders"] == {"HOSTED_1": 1}


def test_public_base_url_is_used_for_the_redirect(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with own_simulator(
        merchant_keys, platform_keys, inspect=conform, public_base_url="https://sim.example"
    ) as (_, caller):
        answer = caller.call("orderAndPay", hosted_order("PUBLIC_1"))
        assert answer.data["redirectUrl"].startswith("https://sim.example/cashier/T")


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"outTradeNo": "has-dash"}, "PARAMS_INVALID", "outTradeNo"),
        ({"outTradeNo": "x" * 65}, "PARAMS_INVALID", "outTradeNo"),
        ({"outTradeNo": None}, "PARAMS_INVALID", "outTradeNo"),
        ({"integrate": "Other"}, "PARAMS_INVALID", "integrate"),
        ({"subject": None}, "PARAMS_INVALID", "subject"),
        ({"userId": None}, "PARAMS_INVALID", "userId"),
        ({"frontCallbackUrl": None}, "PARAMS_INVALID", "frontCallbackUrl"),
        ({"currency": "XXQ"}, "CURRENCY_INVALID", "currency"),
        ({"currency": "usd"}, "CURRENCY_INVALID", "currency"),
        ({"totalAmount": "10.001"}, "AMOUNT_INVALID", "totalAmount"),
        ({"totalAmount": "0"}, "PARAMS_INVALID", "totalAmount"),
        ({"totalAmount": -5}, "PARAMS_INVALID", "totalAmount"),
        ({"totalAmount": "ten"}, "PARAMS_INVALID", "totalAmount"),
        ({"totalAmount": None}, "PARAMS_INVALID", "totalAmount"),
        ({"notifyUrl": "ftp://x"}, "PARAMS_INVALID", "notifyUrl"),
    ],
)
def test_hosted_order_validation(merchant: MerchantCaller, change: dict[str, Any], code: str, field: str) -> None:
    data = {k: v for k, v in {**hosted_order("VALID_1"), **change}.items() if v is not None}
    answer = merchant.call("orderAndPay", data)
    assert answer.code == code
    assert field in answer.body["msg"]
    assert "data" not in answer.body


@pytest.mark.parametrize(
    ("currency", "amount", "code"),
    [
        ("IDR", "10000", "APPLY_SUCCESS"),
        ("IDR", "10000.5", "AMOUNT_INVALID"),
        ("JPY", 100, "APPLY_SUCCESS"),
        ("KWD", "1.25", "APPLY_SUCCESS"),
        ("KWD", "1.255", "AMOUNT_INVALID"),
        ("USD", 10.5, "APPLY_SUCCESS"),
    ],
)
def test_amount_precision_follows_the_currency(merchant: MerchantCaller, currency: str, amount: Any, code: str) -> None:
    assert merchant.call("orderAndPay", hosted_order("PREC_1", currency=currency, totalAmount=amount)).code == code


def test_amounts_are_echoed_as_numbers_with_the_currency_precision(merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", hosted_order("ECHO_1", totalAmount=10.5))
    merchant.call("orderAndPay", hosted_order("ECHO_2", currency="IDR", totalAmount="15000"))
    usd = merchant.call("orderQuery", {"outTradeNo": "ECHO_1"})
    idr = merchant.call("orderQuery", {"outTradeNo": "ECHO_2"})
    assert b'"totalAmount":10.50' in usd.raw
    assert b'"totalAmount":15000,' in idr.raw


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"country": None}, "country"),
        ({"paymentDetail": {}}, "paymentDetail.paymentMethodType"),
    ],
)
def test_direct_payment_needs_country_and_method(merchant: MerchantCaller, change: dict[str, Any], field: str) -> None:
    data = {k: v for k, v in {**direct_order("DIRECT_V"), **change}.items() if v is not None}
    answer = merchant.call("orderAndPay", data)
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", f"{field} is required")


def test_duplicate_out_trade_no_is_order_repeat_case_insensitively(merchant: MerchantCaller) -> None:
    first = merchant.call("orderAndPay", hosted_order("Dup_Order"))
    again = merchant.call("orderAndPay", hosted_order("DUP_ORDER", totalAmount="99"))
    assert again.code == "ORDER_REPEAT"
    assert again.body["msg"] == "Duplicate order"
    assert again.data == {"outTradeNo": "Dup_Order", "tradeToken": first.data["tradeToken"], "status": "PENDING"}
    assert merchant.call("orderQuery", {"outTradeNo": "dup_order"}).data["tradeToken"] == first.data["tradeToken"]


def test_order_repeat_by_default_even_for_an_identical_body(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    data = hosted_order("SAME_1")
    merchant.call("orderAndPay", data)
    assert merchant.call("orderAndPay", data).code == "ORDER_REPEAT"
    assert sim.state.ledger()["orders"] == {"SAME_1": 1}


def test_idempotent_replay_returns_the_original_answer(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    with own_simulator(
        merchant_keys, platform_keys, inspect=conform, idempotent_order_replay=True
    ) as (running, caller):
        data = hosted_order("REPLAY_1")
        first = caller.call("orderAndPay", data)
        replay = caller.call("orderAndPay", data)
        different = caller.call("orderAndPay", {**data, "totalAmount": "11.00"})
        assert replay.body == first.body
        assert different.code == "ORDER_REPEAT"
        assert running.state.ledger()["orders"] == {"REPLAY_1": 1}


def test_expire_time_is_clamped(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", hosted_order("EXP_LOW", expireTime="60"))
    merchant.call("orderAndPay", hosted_order("EXP_HIGH", expireTime="999999"))
    merchant.call("orderAndPay", hosted_order("EXP_MID", expireTime="3600"))
    merchant.call("orderAndPay", hosted_order("EXP_DEFAULT"))
    merchant.call("orderAndPay", direct_order("EXP_DIRECT", subject="PENDING"))
    lifetimes = {}
    for key in ("EXP_LOW", "EXP_HIGH", "EXP_MID", "EXP_DEFAULT", "EXP_DIRECT"):
        order = sim.state.order(key)
        assert order is not None
        lifetimes[key] = (order.expire_at - order.created_at).total_seconds()
    assert lifetimes == {"EXP_LOW": 1800, "EXP_HIGH": 86400, "EXP_MID": 3600, "EXP_DEFAULT": 86400, "EXP_DIRECT": 1800}


# the hosted cashier


def test_cashier_page_shows_the_order_and_its_buttons(merchant: MerchantCaller, web: httpx.Client) -> None:
    answer = merchant.call("orderAndPay", hosted_order("PAGE_1", subject="Blue <mug>", totalAmount="12.5"))
    page = web.get(answer.data["redirectUrl"])
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    for needle in ('id="pay-success"', 'id="pay-fail"', 'id="pay-pending"', "12.50", "USD", "Blue &lt;mug&gt;"):
        assert needle in page.text
    assert 'id="save-card"' not in page.text


def test_cashier_offers_save_card_when_tokenisation_was_requested(merchant: MerchantCaller, web: httpx.Client) -> None:
    answer = merchant.call("orderAndPay", hosted_order("PAGE_2", detail={"tokenForFutureUse": True}))
    page = web.get(answer.data["redirectUrl"]).text
    assert re.search(r'<input type="checkbox" id="save-card" name="save_card" value="true" checked>', page)


def test_unknown_cashier_page_is_404(sim: RunningSimulator, web: httpx.Client) -> None:
    assert web.get(f"{sim.base_url}/cashier/T000").status_code == 404


def test_cashier_success_notifies_with_a_signed_body(
    sim: RunningSimulator,
    merchant: MerchantCaller,
    sink: NotificationSink,
    platform_keys: PortalKeyPair,
    web: httpx.Client,
) -> None:
    answer = merchant.call("orderAndPay", hosted_order("PAY_1", notify_url=sink.url, reference="ref-1"))
    result = web.post(answer.data["redirectUrl"], data={"action": "success"})
    assert result.status_code == 200
    assert 'id="status">SUCCESS' in result.text
    link = re.search(r'id="return-link" href="([^"]+)"', result.text)
    assert link is not None
    assert link.group(1).replace("&amp;", "&") == (
        f"https://shop.example/return?outTradeNo=PAY_1&tradeToken={answer.data['tradeToken']}&status=SUCCESS"
    )
    (note,) = sink.wait_for(1)
    assert note.signature_ok
    assert note.content_type == "application/json"
    body = note.body
    assert {k: body[k] for k in ("code", "msg", "keyVersion", "appId", "merchantNo", "notifyType")} == {
        "code": "APPLY_SUCCESS",
        "msg": "Success.",
        "keyVersion": "1",
        "appId": "APP_TEST",
        "merchantNo": "MERCHANT_TEST",
        "notifyType": "PAYMENT",
    }
    data = body["data"]
    assert (data["outTradeNo"], data["status"], data["totalAmount"], data["reference"]) == (
        "PAY_1",
        "SUCCESS",
        Decimal("10.00"),
        "ref-1",
    )
    assert data["completeTime"].endswith("Z")
    (detail,) = data["paymentDetails"]
    assert detail["paymentMethodType"] == "CARD"
    assert detail["cardInfo"]["cardIdentifierNo"] == "411111******1111"
    assert "paymentTokenID" not in detail
    validate_notification("payment", body)


def test_cashier_fail_notifies_a_failure_code(
    merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    answer = merchant.call("orderAndPay", hosted_order("PAY_2", notify_url=sink.url))
    web.post(answer.data["redirectUrl"], data={"action": "fail"})
    body = sink.wait_for(1)[0].body
    assert (body["code"], body["data"]["status"], body["data"]["paymentDetails"]) == ("PAYMENT_FAILED", "FAILED", [])
    query = merchant.call("orderQuery", {"outTradeNo": "PAY_2"})
    assert (query.data["status"], query.data["resultCode"], query.data["resultMsg"]) == (
        "FAILED",
        "PAYMENT_FAILED",
        "Payment failed.",
    )


def test_cashier_pending_changes_nothing_and_sends_nothing(
    sim: RunningSimulator, merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    answer = merchant.call("orderAndPay", hosted_order("PAY_3", notify_url=sink.url))
    result = web.post(answer.data["redirectUrl"], data={"action": "pending"})
    assert 'id="status">PENDING' in result.text
    again = web.post(answer.data["redirectUrl"], data={"action": "success"})
    assert 'id="status">SUCCESS' in again.text
    assert len(sink.wait_for(1)) == 1


def test_a_completed_order_cannot_be_paid_again(merchant: MerchantCaller, web: httpx.Client) -> None:
    answer = merchant.call("orderAndPay", hosted_order("PAY_4"))
    web.post(answer.data["redirectUrl"], data={"action": "success"})
    assert web.post(answer.data["redirectUrl"], data={"action": "fail"}).status_code == 409
    assert merchant.call("orderQuery", {"outTradeNo": "PAY_4"}).data["status"] == "SUCCESS"


def test_default_notify_url_is_the_fallback(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with (
        closing(NotificationSink(platform_keys.public_key)) as receiver,
        own_simulator(merchant_keys, platform_keys, inspect=conform, default_notify_url=receiver.url) as (_, caller),
    ):
        caller.call("orderAndPay", direct_order("FALLBACK_1"))
        assert receiver.wait_for(1)[0].body["data"]["outTradeNo"] == "FALLBACK_1"


def test_no_notify_url_anywhere_means_no_notification(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", direct_order("SILENT_1"))
    assert merchant.call("orderQuery", {"outTradeNo": "SILENT_1"}).data["status"] == "SUCCESS"
    assert sim.state.attempts() == []


# direct payments and their triggers


@pytest.mark.parametrize(
    ("subject", "status", "redirect"),
    [
        ("SUCCESS", "SUCCESS", False),
        ("Any other subject", "SUCCESS", False),
        ("FAILED", "FAILED", False),
        ("PENDING", "PENDING", False),
        ("3DS", "PENDING", True),
    ],
)
def test_direct_card_subject_triggers(merchant: MerchantCaller, subject: str, status: str, redirect: bool) -> None:
    answer = merchant.call("orderAndPay", direct_order("TRIG_1", subject=subject))
    assert answer.data["status"] == status
    assert ("redirectUrl" in answer.data) is redirect
    assert merchant.call("orderQuery", {"outTradeNo": "TRIG_1"}).data["status"] == status


def test_direct_sync_success_still_notifies(merchant: MerchantCaller, sink: NotificationSink) -> None:
    answer = merchant.call("orderAndPay", direct_order("SYNC_1", notify_url=sink.url))
    assert answer.data["status"] == "SUCCESS"
    assert sink.wait_for(1)[0].body["data"]["status"] == "SUCCESS"


def test_direct_3ds_challenge_page_decides(merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client) -> None:
    answer = merchant.call("orderAndPay", direct_order("TDS_1", subject="3DS", notify_url=sink.url))
    page = web.get(answer.data["redirectUrl"]).text
    assert 'id="pass-3ds"' in page
    assert 'id="fail-3ds"' in page
    assert 'id="pay-success"' not in page
    web.post(answer.data["redirectUrl"], data={"action": "3ds_pass"})
    card = sink.wait_for(1)[0].body["data"]["paymentDetails"][0]["cardInfo"]
    assert card["threeDSResult"]["authenticationStatus"] == "Y"
    assert card["threeDSResult"]["eci"] == "05"


def test_direct_3ds_failure(merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client) -> None:
    answer = merchant.call("orderAndPay", direct_order("TDS_2", subject="3DS", notify_url=sink.url))
    web.post(answer.data["redirectUrl"], data={"action": "3ds_fail"})
    body = sink.wait_for(1)[0].body
    assert (body["code"], body["data"]["status"]) == ("AUTHENTICATE_FAILED", "FAILED")


def test_direct_card_number_is_masked(merchant: MerchantCaller) -> None:
    detail = {"cardInfo": {"cardIdentifierNo": "5555555555554444", "cardHolderFullName": "Allen Black"}}
    merchant.call("orderAndPay", direct_order("MASK_1", detail=detail))
    card = merchant.call("orderQuery", {"outTradeNo": "MASK_1"}).data["paymentDetails"][0]["cardInfo"]
    assert (card["cardIdentifierNo"], card["cardOrg"], card["cardIdentifierName"]) == (
        "555555******4444",
        "MASTERCARD",
        "**len Black",
    )


def test_direct_wallet_redirects_to_the_cashier(merchant: MerchantCaller) -> None:
    answer = merchant.call("orderAndPay", direct_order("WALLET_1", detail={"paymentMethodType": "WALLET"}))
    assert answer.data["status"] == "PENDING"
    assert "/cashier/" in answer.data["redirectUrl"]


def test_amount_triggers_are_off_by_default(merchant: MerchantCaller) -> None:
    assert (
        merchant.call("orderAndPay", direct_order("AMT_0", subject="x", totalAmount="15")).data["status"] == "SUCCESS"
    )


def test_amount_triggers_behind_the_flag(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with own_simulator(merchant_keys, platform_keys, inspect=conform, amount_triggers=True) as (running, caller):
        cases = {"15": "FAILED", "1.12": "FAILED", "60": "PENDING", "222": "PENDING", "10": "SUCCESS"}
        for index, (amount, status) in enumerate(cases.items()):
            answer = caller.call("orderAndPay", direct_order(f"AMT_{index}", subject="x", totalAmount=amount))
            assert answer.data["status"] == status, amount
        assert "redirectUrl" in running.state.order("AMT_3").first_reply  # type: ignore[union-attr]


# orderQuery


def test_order_query_unknown_is_order_not_exist(merchant: MerchantCaller) -> None:
    answer = merchant.call("orderQuery", {"outTradeNo": "NOPE"})
    assert answer.body == {"code": "ORDER_NOT_EXIST", "msg": "Order does not exist."}


def test_order_query_pending_shape(merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", hosted_order("Q_1", reference="r"))
    data = merchant.call("orderQuery", {"outTradeNo": "q_1"}).data
    assert data["status"] == "PENDING"
    assert data["resultMsg"] == ""
    assert data["paymentDetails"] == []
    assert data["createTime"].endswith("Z")
    assert "completeTime" not in data
    assert (data["country"], data["currency"], data["reference"]) == ("US", "USD", "r")


# expiry on the virtual clock


def test_expiry_closes_and_notifies_payment_failed(
    sim: RunningSimulator, merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    merchant.call("orderAndPay", hosted_order("EXPIRE_1", expireTime="1800", notify_url=sink.url))
    control(web, "POST", "/clock/advance", {"seconds": 1799}).raise_for_status()
    assert merchant.call("orderQuery", {"outTradeNo": "EXPIRE_1"}).data["status"] == "PENDING"
    control(web, "POST", "/clock/advance", {"seconds": 2}).raise_for_status()
    data = merchant.call("orderQuery", {"outTradeNo": "EXPIRE_1"}).data
    assert (data["status"], data["resultMsg"]) == ("CLOSED", "Payment was not completed on time.")
    body = sink.wait_for(1)[0].body
    assert (body["code"], body["msg"]) == ("PAYMENT_FAILED", "Payment was not completed on time.")
    assert (body["data"]["status"], body["data"]["paymentDetails"]) == ("CLOSED", [])
    assert sim.state.order("EXPIRE_1").status is OrderStatus.CLOSED  # type: ignore[union-attr]


def test_a_paid_order_does_not_expire(sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client) -> None:
    merchant.call("orderAndPay", direct_order("PAID_1"))
    control(web, "POST", "/clock/advance", {"seconds": 86400 * 2}).raise_for_status()
    assert merchant.call("orderQuery", {"outTradeNo": "PAID_1"}).data["status"] == "SUCCESS"


# control API on orders


def test_control_completes_an_order_with_a_custom_failure(
    sim: RunningSimulator, merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    merchant.call("orderAndPay", hosted_order("CTL_1", notify_url=sink.url))
    response = control(
        web, "POST", "/orders/ctl_1/complete", {"status": "FAILED", "code": "ISSUER_PAYMENT_REJECTED", "msg": "No."}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "FAILED"
    assert sink.wait_for(1)[0].body["code"] == "ISSUER_PAYMENT_REJECTED"
    assert control(web, "POST", "/orders/CTL_1/complete", {"status": "SUCCESS"}).status_code == 409


def test_control_can_complete_silently_and_force_a_contradiction(
    sim: RunningSimulator, merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    merchant.call("orderAndPay", hosted_order("CTL_2", notify_url=sink.url))
    control(web, "POST", "/orders/CTL_2/complete", {"status": "CLOSED", "notify": False}).raise_for_status()
    forced = control(web, "POST", "/orders/CTL_2/complete", {"status": "SUCCESS", "force": True})
    assert forced.json()["status"] == "SUCCESS"
    notes = sink.wait_for(1)
    wait_until(lambda: len(sim.state.attempts(key="CTL_2")) == 1)
    assert [n.body["data"]["status"] for n in notes] == ["SUCCESS"]


def test_control_order_truth(sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client) -> None:
    merchant.call("orderAndPay", hosted_order("TRUTH_1", userId="alice"))
    truth = control(web, "GET", "/orders/truth_1").json()
    assert (truth["outTradeNo"], truth["status"], truth["userId"], truth["amount"]) == (
        "TRUTH_1",
        "PENDING",
        "alice",
        10,
    )
    assert truth["refunds"] == []
    assert control(web, "GET", "/orders/NOPE").status_code == 404
    assert control(web, "POST", "/orders/TRUTH_1/complete", {"status": "WEIRD"}).status_code == 400


def test_reset_forgets_everything(sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client) -> None:
    merchant.call("orderAndPay", hosted_order("RESET_1"))
    control(web, "POST", "/clock/advance", {"seconds": 100}).raise_for_status()
    control(web, "POST", "/reset").raise_for_status()
    assert sim.state.orders() == []
    assert sim.state.ledger()["orders"] == {}
    assert control(web, "GET", "/clock").json()["offsetSeconds"] == 0
