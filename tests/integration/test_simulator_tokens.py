"""Tokenisation on the simulator: minting, token payments, 3DS, refusals, inquiry and removal."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.integration.conftest import conform
from tests.openapi import validate_response
from tests.support.notification_sink import NotificationSink
from tests.support.simkit import MerchantCaller, direct_order, hosted_order, own_simulator
from worker.devtools.simulator.records import TokenStatus
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import parse_time

OFFER = {"tokenForFutureUse": True}


def mint(merchant: MerchantCaller, out_trade_no: str, user_id: str = "user_1", **detail: Any) -> str:
    """A first direct card payment that offers tokenisation; returns the minted token."""
    data = direct_order(out_trade_no, userId=user_id, detail={**OFFER, **detail})
    assert merchant.call("orderAndPay", data).data["status"] == "SUCCESS"
    token: str = merchant.call("orderQuery", {"outTradeNo": out_trade_no}).data["paymentDetails"][0]["paymentTokenID"]
    return token


def inquire(merchant: MerchantCaller, user_id: str, **filters: Any) -> list[dict[str, Any]]:
    answer = merchant.call("inquirePaymentToken", {"userId": user_id, "tokenScope": "tokenAcq", **filters})
    assert answer.code == "APPLY_SUCCESS"
    tokens: list[dict[str, Any]] = answer.data["tokenList"]
    return tokens


# minting


def test_cashier_payment_with_consent_mints_a_token(
    sim: RunningSimulator, merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    answer = merchant.call("orderAndPay", hosted_order("MINT_1", userId="alice", notify_url=sink.url, detail=OFFER))
    web.post(answer.data["redirectUrl"], data={"action": "success", "save_card": "true"})
    (detail,) = sink.wait_for(1)[0].body["data"]["paymentDetails"]
    token_id = detail["paymentTokenID"]
    assert re.fullmatch(r"PMTOKEN\d{20,40}", token_id)
    assert detail["cardInfo"]["paymentTokenID"] == token_id
    token = sim.state.token(token_id)
    assert token is not None
    assert (token.user_id, token.status, token.out_trade_no) == ("alice", TokenStatus.ACTIVATED, "MINT_1")
    query = merchant.call("orderQuery", {"outTradeNo": "MINT_1"}).data
    assert query["paymentDetails"][0]["paymentTokenID"] == token_id


def test_string_true_also_offers_tokenisation(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", direct_order("MINT_2", detail={"tokenForFutureUse": "true"}))
    assert merchant.call("orderQuery", {"outTradeNo": "MINT_2"}).data["paymentDetails"][0]["paymentTokenID"]


def test_an_unticked_save_card_box_declines_consent(
    sim: RunningSimulator, merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    answer = merchant.call("orderAndPay", hosted_order("NOMINT_1", notify_url=sink.url, detail=OFFER))
    web.post(answer.data["redirectUrl"], data={"action": "success"})
    (detail,) = sink.wait_for(1)[0].body["data"]["paymentDetails"]
    assert "paymentTokenID" not in detail
    assert "paymentTokenID" not in detail["cardInfo"]
    assert sim.state.tokens() == []


def test_control_completion_can_decline_consent(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client
) -> None:
    merchant.call("orderAndPay", hosted_order("NOMINT_2", detail=OFFER))
    body = {"status": "SUCCESS", "token_consent": False}
    web.post("/__sim/orders/NOMINT_2/complete", json=body).raise_for_status()
    assert sim.state.tokens() == []
    web.post("/__sim/orders/NOMINT_2/complete", json={"status": "SUCCESS", "force": True}).raise_for_status()
    assert len(sim.state.tokens()) == 1


def test_no_token_without_the_offer_or_without_success(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", direct_order("NOMINT_3"))
    merchant.call("orderAndPay", direct_order("NOMINT_4", subject="FAILED", detail=OFFER))
    assert sim.state.tokens() == []


def test_the_same_card_gets_the_same_active_token(merchant: MerchantCaller) -> None:
    assert mint(merchant, "SAME_1") == mint(merchant, "SAME_2")
    assert len(inquire(merchant, "user_1")) == 1


# token payments


def test_token_payment_succeeds_synchronously_and_notifies(merchant: MerchantCaller, sink: NotificationSink) -> None:
    token_id = mint(merchant, "FIRST_1")
    answer = merchant.call(
        "orderAndPay", direct_order("SECOND_1", subject="Coffee", token_id=token_id, notify_url=sink.url)
    )
    assert answer.data["status"] == "SUCCESS"
    assert "redirectUrl" not in answer.data
    validate_response("orderAndPay:direct", answer.body)
    (detail,) = sink.wait_for(1)[0].body["data"]["paymentDetails"]
    assert detail["paymentTokenID"] == token_id
    assert detail["cardInfo"]["cardIdentifierNo"] == "411111******1111"


def test_token_payment_needs_client_ip_and_user_agent(merchant: MerchantCaller) -> None:
    token_id = mint(merchant, "FIRST_2")
    data = direct_order("SECOND_2", token_id=token_id)
    del data["paymentDetail"]["buyerInfo"]["userAgent"]
    answer = merchant.call("orderAndPay", data)
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", "paymentDetail.buyerInfo.userAgent is required")


def test_token_payment_with_3ds_goes_through_the_challenge(
    merchant: MerchantCaller, sink: NotificationSink, web: httpx.Client
) -> None:
    token_id = mint(merchant, "FIRST_3")
    answer = merchant.call(
        "orderAndPay", direct_order("SECOND_3", subject="3DS", token_id=token_id, notify_url=sink.url)
    )
    assert answer.data["status"] == "PENDING"
    page = web.get(answer.data["redirectUrl"]).text
    assert 'id="pass-3ds"' in page
    web.post(answer.data["redirectUrl"], data={"action": "3ds_pass"})
    body = sink.wait_for(1)[0].body
    card = body["data"]["paymentDetails"][0]["cardInfo"]
    assert (body["data"]["status"], card["paymentTokenID"]) == ("SUCCESS", token_id)
    assert card["threeDSResult"]["authenticationStatus"] == "Y"


@pytest.mark.parametrize("problem", ["unknown", "foreign", "deleted", "expired"])
def test_unusable_tokens_are_refused(
    merchant: MerchantCaller, web: httpx.Client, sim: RunningSimulator, problem: str
) -> None:
    token_id = mint(merchant, "FIRST_4", user_id="alice")
    user = "alice"
    if problem == "unknown":
        token_id = "PMTOKEN0000"
    elif problem == "foreign":
        user = "mallory"
    elif problem == "deleted":
        merchant.call("removePaymentToken", {"userId": "alice", "paymentTokenID": token_id})
    else:
        web.post(f"/__sim/tokens/{token_id}/expire").raise_for_status()
    answer = merchant.call("orderAndPay", direct_order("SECOND_4", token_id=token_id, userId=user))
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", "paymentTokenID is invalid")
    assert sim.state.order("SECOND_4") is None


def test_the_token_reject_code_is_configurable(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with own_simulator(merchant_keys, platform_keys, inspect=conform, token_reject_code="AUTH_FAILED") as (_, caller):
        assert caller.call("orderAndPay", direct_order("T_1", token_id="PMTOKEN1")).code == "AUTH_FAILED"


def test_token_payments_need_direct_payment_by_default(merchant: MerchantCaller) -> None:
    token_id = mint(merchant, "FIRST_5")
    data = hosted_order("SECOND_5", detail={"paymentTokenID": token_id})
    answer = merchant.call("orderAndPay", data)
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", "paymentTokenID requires integrate Direct_Payment")


# inquiry and removal


def test_inquiry_lists_the_user_s_tokens(merchant: MerchantCaller) -> None:
    token_id = mint(merchant, "INQ_1", user_id="bob")
    (item,) = inquire(merchant, "bob")
    assert item["paymentTokenID"] == token_id
    assert {k: item[k] for k in ("userId", "tokenScope", "paymentTokenStatus", "paymentMethodType", "cardInfo")} == {
        "userId": "bob",
        "tokenScope": "tokenAcq",
        "paymentTokenStatus": "Activated",
        "paymentMethodType": "CARD",
        "cardInfo": "411111******1111",
    }
    assert (item["brand"], item["ifCVV"], item["paymentTokenExpiry"]) == ("VISA", "N", "2030-12-31T23:59:59.000Z")


def test_inquiry_for_a_user_without_tokens_is_an_empty_list(merchant: MerchantCaller) -> None:
    assert inquire(merchant, "nobody") == []


def test_inquiry_scope_defaults_to_token_acq(merchant: MerchantCaller) -> None:
    mint(merchant, "INQ_2", user_id="bob")
    assert len(merchant.call("inquirePaymentToken", {"userId": "bob"}).data["tokenList"]) == 1
    assert merchant.call("inquirePaymentToken", {"userId": "bob", "tokenScope": "tokenMit"}).data["tokenList"] == []
    assert merchant.call("inquirePaymentToken", {"userId": "bob", "tokenScope": "other"}).code == "PARAMS_INVALID"
    assert merchant.call("inquirePaymentToken", {"tokenScope": "tokenAcq"}).code == "PARAMS_INVALID"


def test_inquiry_filters(merchant: MerchantCaller) -> None:
    visa = mint(merchant, "INQ_3", user_id="carol")
    master = mint(merchant, "INQ_4", user_id="carol", cardInfo={"cardIdentifierNo": "5555555555554444"})
    assert [t["paymentTokenID"] for t in inquire(merchant, "carol")] == [visa, master]
    assert [t["paymentTokenID"] for t in inquire(merchant, "carol", cardOrg="MASTERCARD")] == [master]
    assert [t["paymentTokenID"] for t in inquire(merchant, "carol", paymentTokenID=visa)] == [visa]
    assert inquire(merchant, "carol", paymentMethodType="WALLET") == []


def test_removal_is_idempotent_and_visible(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    token_id = mint(merchant, "REM_1", user_id="dave")
    expected = {"userId": "dave", "paymentTokenID": token_id, "paymentTokenStatus": "Deleted"}
    first = merchant.call("removePaymentToken", {"userId": "dave", "paymentTokenID": token_id, "removeReason": "bye"})
    again = merchant.call("removePaymentToken", {"userId": "dave", "paymentTokenID": token_id})
    assert first.data == expected
    assert again.data == expected
    assert [t["paymentTokenStatus"] for t in inquire(merchant, "dave")] == ["Deleted"]
    assert sim.state.token(token_id).status is TokenStatus.DELETED  # type: ignore[union-attr]


def test_removal_of_someone_else_s_or_an_unknown_token_is_refused(merchant: MerchantCaller) -> None:
    token_id = mint(merchant, "REM_2", user_id="erin")
    foreign = merchant.call("removePaymentToken", {"userId": "mallory", "paymentTokenID": token_id})
    unknown = merchant.call("removePaymentToken", {"userId": "erin", "paymentTokenID": "PMTOKEN404"})
    assert (foreign.code, unknown.code) == ("PARAMS_INVALID", "PARAMS_INVALID")
    assert [t["paymentTokenStatus"] for t in inquire(merchant, "erin")] == ["Activated"]


def test_an_expired_token_is_listed_as_expired(merchant: MerchantCaller, web: httpx.Client) -> None:
    token_id = mint(merchant, "EXP_1", user_id="fay")
    expired = web.post(f"/__sim/tokens/{token_id}/expire").json()
    assert expired["paymentTokenStatus"] == "Expired"
    assert [t["paymentTokenStatus"] for t in inquire(merchant, "fay")] == ["Expired"]
    assert web.post("/__sim/tokens/PMTOKEN404/expire").status_code == 404


def test_a_token_expires_with_its_card_on_the_virtual_clock(merchant: MerchantCaller, web: httpx.Client) -> None:
    """The token lives to the end of the card's expiry month, then reads as Expired."""
    year = f"{(merchant.clock().year + 1) % 100:02d}"
    card = {"cardIdentifierNo": "4111111111111111", "cardExpirationMonth": "01", "cardExpirationYear": year}
    token_id = mint(merchant, "EXP_2", user_id="gus", cardInfo=card)
    (item,) = inquire(merchant, "gus")
    assert item["paymentTokenExpiry"] == f"20{year}-01-31T23:59:59.000Z"
    expiry = parse_time(item["paymentTokenExpiry"])
    assert expiry is not None
    web.post("/__sim/clock/advance", json={"seconds": (expiry - merchant.clock()).total_seconds() + 60})
    assert [t["paymentTokenStatus"] for t in inquire(merchant, "gus")] == ["Expired"]
    answer = merchant.call("orderAndPay", direct_order("EXP_3", token_id=token_id, userId="gus"))
    assert answer.code == "PARAMS_INVALID"


def test_control_lists_tokens_by_user(merchant: MerchantCaller, web: httpx.Client) -> None:
    token_id = mint(merchant, "CTL_T1", user_id="hal")
    mint(merchant, "CTL_T2", user_id="ida")
    listed = web.get("/__sim/tokens", params={"userId": "hal"}).json()["tokens"]
    assert [(t["paymentTokenID"], t["outTradeNo"]) for t in listed] == [(token_id, "CTL_T1")]
    assert len(web.get("/__sim/tokens").json()["tokens"]) == 2
