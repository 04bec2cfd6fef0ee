"""The simulator refuses what the official OpenAPI schema refuses, and stays lenient where WIRE.md §26 says so."""

from __future__ import annotations

import pytest

from tests.support.simkit import MerchantCaller, direct_order, hosted_order
from worker.devtools.simulator.server import RunningSimulator


def refused(answer_code: str, msg: str, expected: str) -> None:
    assert (answer_code, msg) == ("PARAMS_INVALID", expected)


def test_language_up_to_16_characters_is_accepted(merchant: MerchantCaller) -> None:
    assert merchant.call("orderAndPay", hosted_order("LANG_OK", language="zh-Hant-TW-x-abc")).code == "APPLY_SUCCESS"


def test_language_over_16_characters_is_refused(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    answer = merchant.call("orderAndPay", hosted_order("LANG_LONG", language="zh-Hant-TW-x-abcd"))
    refused(answer.code or "", answer.body["msg"], "language is longer than 16")
    assert sim.state.order("LANG_LONG") is None


@pytest.mark.parametrize("value", [3600, 3600.0])
def test_expire_time_as_a_json_number_is_refused(sim: RunningSimulator, merchant: MerchantCaller,
                                                 value: float) -> None:
    """The schema types ``expireTime`` as a string of seconds; a number is what a sloppy client sends."""
    answer = merchant.call("orderAndPay", hosted_order("EXP_NUM", expireTime=value))
    refused(answer.code or "", answer.body["msg"], "expireTime must be a string of seconds")
    assert sim.state.order("EXP_NUM") is None


def test_expire_time_as_a_string_is_accepted(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    assert merchant.call("orderAndPay", hosted_order("EXP_STR", expireTime="3600")).code == "APPLY_SUCCESS"
    order = sim.state.order("EXP_STR")
    assert order is not None and (order.expire_at - order.created_at).total_seconds() == 3600


def test_direct_payment_without_terminal_type_is_refused(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    data = direct_order("TERM_NONE")
    del data["terminalType"]
    answer = merchant.call("orderAndPay", data)
    refused(answer.code or "", answer.body["msg"], "terminalType is required")
    assert sim.state.order("TERM_NONE") is None


def test_a_terminal_type_longer_than_the_schema_allows_is_refused(merchant: MerchantCaller) -> None:
    answer = merchant.call("orderAndPay", direct_order("TERM_LONG", terminalType="DESKTOP"))
    refused(answer.code or "", answer.body["msg"], "terminalType is longer than 3")


def test_hosted_checkout_needs_no_terminal_type(merchant: MerchantCaller) -> None:
    assert "terminalType" not in hosted_order("TERM_HOSTED")
    assert merchant.call("orderAndPay", hosted_order("TERM_HOSTED")).code == "APPLY_SUCCESS"


def test_token_for_future_use_as_the_string_true_still_mints_a_token(merchant: MerchantCaller) -> None:
    """Lenient on purpose, though the schema says boolean: WIRE.md §26 says accept ``true`` and ``"true"``,
    because the Checus zh page quotes the string (§25 question 9) and a real Checus may expect it."""
    answer = merchant.call("orderAndPay", direct_order("TFU_STR", detail={"tokenForFutureUse": "true"}))
    assert answer.data["status"] == "SUCCESS"
    query = merchant.call("orderQuery", {"outTradeNo": "TFU_STR"})
    assert query.data["paymentDetails"][0]["paymentTokenID"].startswith("PMTOKEN")


def test_token_inquiry_without_token_scope_defaults_to_token_acq(merchant: MerchantCaller) -> None:
    """Lenient on purpose, though the schema lists ``tokenScope`` as required: WIRE.md §26 says it defaults
    to ``tokenAcq``, as the schema's own description does ("不填默认为tokenAcq", empty means tokenAcq)."""
    merchant.call("orderAndPay", direct_order("SCOPE_1", detail={"tokenForFutureUse": True}))
    answer = merchant.call("inquirePaymentToken", {"userId": "user_1"})
    assert answer.code == "APPLY_SUCCESS"
    assert [item["tokenScope"] for item in answer.data["tokenList"]] == ["tokenAcq"]
