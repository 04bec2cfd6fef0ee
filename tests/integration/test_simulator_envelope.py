"""The simulator's envelope: signatures on raw bytes, envelope errors in order, signed answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.conftest import conform
from tests.openapi import SchemaMismatch, validate_request, validate_response
from tests.support.simkit import MerchantCaller, direct_order, hosted_order, own_simulator
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair, Signer, Verifier
from worker.gateway.wire import dumps, format_time

QUERY = {"outTradeNo": "NO_SUCH_ORDER"}


def test_a_correctly_signed_request_reaches_the_endpoint(merchant: MerchantCaller) -> None:
    """A valid envelope gets past every check: an unknown order is the endpoint's own answer."""
    answer = merchant.call("orderQuery", QUERY)
    assert answer.code == "ORDER_NOT_EXIST"
    assert "data" not in answer.body


def test_missing_sign_is_refused(merchant: MerchantCaller) -> None:
    """No ``sign`` header: SIGN_VERIFY_FAILED with the gateway's message and no data."""
    answer = merchant.send("orderQuery", dumps(merchant.envelope("orderQuery", QUERY)), sign=None)
    assert answer.body == {"code": "SIGN_VERIFY_FAILED", "msg": "The signature verify failed."}
    assert answer.signature_ok
    validate_response("orderQuery", answer.body)


def test_a_stranger_s_signature_is_refused(merchant: MerchantCaller, other_keys: PortalKeyPair) -> None:
    raw = dumps(merchant.envelope("orderQuery", QUERY))
    stranger = Signer.from_value(other_keys.private_key, setting="other")
    assert merchant.send("orderQuery", raw, sign=stranger.sign(raw)).code == "SIGN_VERIFY_FAILED"


def test_garbage_in_the_sign_header_is_refused(merchant: MerchantCaller) -> None:
    raw = dumps(merchant.envelope("orderQuery", QUERY))
    assert merchant.send("orderQuery", raw, sign="not base64 at all").code == "SIGN_VERIFY_FAILED"


def test_the_signature_covers_the_raw_bytes_not_the_parsed_json(merchant: MerchantCaller) -> None:
    """Re-serializing (extra spaces) after signing breaks the signature, though the JSON is equal."""
    raw = dumps(merchant.envelope("orderQuery", QUERY))
    sign = merchant.signer.sign(raw)
    respaced = raw.replace(b",", b", ")
    assert merchant.send("orderQuery", respaced, sign=sign).code == "SIGN_VERIFY_FAILED"
    assert merchant.send("orderQuery", respaced, sign=merchant.signer.sign(respaced)).code == "ORDER_NOT_EXIST"


def test_php_style_escaped_slashes_verify_when_signed_as_sent(merchant: MerchantCaller) -> None:
    """A peer that writes ``\\/`` signs those bytes; the gateway verifies exactly them."""
    data = hosted_order("ESCAPED_1", frontCallbackUrl="https://shop.example/return")
    raw = dumps(merchant.envelope("orderAndPay", data)).replace(b"/", b"\\/")
    answer = merchant.send("orderAndPay", raw, sign=merchant.signer.sign(raw))
    assert answer.code == "APPLY_SUCCESS"
    conform("orderAndPay", data, answer)


def test_a_body_that_is_not_json_is_params_invalid_once_signed(merchant: MerchantCaller) -> None:
    raw = b"{not json"
    answer = merchant.send("orderQuery", raw, sign=merchant.signer.sign(raw))
    assert answer.code == "PARAMS_INVALID"
    assert answer.signature_ok


def test_the_signature_is_checked_before_the_body_is_parsed(merchant: MerchantCaller) -> None:
    assert merchant.send("orderQuery", b"{not json", sign=None).code == "SIGN_VERIFY_FAILED"


def test_content_type_must_be_json(merchant: MerchantCaller) -> None:
    raw = dumps(merchant.envelope("orderQuery", QUERY))
    answer = merchant.send("orderQuery", raw, sign=merchant.signer.sign(raw), content_type="text/plain")
    assert answer.code == "PARAMS_INVALID"


@pytest.mark.parametrize("missing", ["version", "keyVersion", "requestTime", "appId", "data"])
def test_each_required_envelope_field_is_checked(merchant: MerchantCaller, missing: str) -> None:
    overrides: dict[str, Any] = {missing: None}
    answer = merchant.call("orderQuery", QUERY, **overrides)
    assert answer.code == "PARAMS_INVALID"
    assert missing in answer.body["msg"]


def test_an_unknown_app_id_is_merchant_app_invalid(merchant: MerchantCaller) -> None:
    assert merchant.call("orderQuery", QUERY, appId="SOMEONE_ELSE").code == "MERCHANT_APP_INVALID"


def test_a_wrong_merchant_no_is_merchant_invalid(merchant: MerchantCaller) -> None:
    assert merchant.call("orderQuery", QUERY, merchantNo="OTHER").code == "MERCHANT_INVALID"


def test_merchant_no_may_be_left_out(merchant: MerchantCaller) -> None:
    assert merchant.call("orderQuery", QUERY, merchantNo=None).code == "ORDER_NOT_EXIST"


def test_app_id_is_checked_before_merchant_no(merchant: MerchantCaller) -> None:
    assert merchant.call("orderQuery", QUERY, appId="X", merchantNo="Y").code == "MERCHANT_APP_INVALID"


@pytest.mark.parametrize("skew", [timedelta(seconds=-121), timedelta(seconds=121), timedelta(hours=5)])
def test_a_request_time_out_of_tolerance_is_refused(merchant: MerchantCaller, skew: timedelta) -> None:
    stale = format_time(merchant.clock() + skew)
    assert merchant.call("orderQuery", QUERY, requestTime=stale).code == "PARAMS_INVALID"


def test_a_request_time_within_tolerance_is_accepted(merchant: MerchantCaller) -> None:
    near = format_time(merchant.clock() - timedelta(seconds=100))
    assert merchant.call("orderQuery", QUERY, requestTime=near).code == "ORDER_NOT_EXIST"


def test_a_request_time_that_is_not_rfc3339_is_refused(merchant: MerchantCaller) -> None:
    assert merchant.call("orderQuery", QUERY, requestTime="17/01/2022 08:04").code == "PARAMS_INVALID"


def test_the_clock_check_follows_the_virtual_clock(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    """After a clock advance a real-time requestTime is stale, a virtual one is fine."""
    httpx.post(f"{sim.base_url}/__sim/clock/advance", json={"seconds": 3600}).raise_for_status()
    real_now = format_time(datetime.now(UTC))
    assert merchant.call("orderQuery", QUERY, requestTime=real_now).code == "PARAMS_INVALID"
    assert merchant.call("orderQuery", QUERY).code == "ORDER_NOT_EXIST"


def test_lenient_clock_accepts_any_time(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with own_simulator(merchant_keys, platform_keys, inspect=conform, lenient_clock=True) as (_, caller):
        answer = caller.call("orderQuery", QUERY, requestTime="2001-01-01T00:00:00.000+00:00")
        assert answer.code == "ORDER_NOT_EXIST"


def test_key_version_must_be_1(merchant: MerchantCaller) -> None:
    assert merchant.call("orderQuery", QUERY, keyVersion="2").code == "PARAMS_INVALID"


VERSION_DATA: dict[str, dict[str, Any]] = {
    "orderQuery": QUERY,
    "refund": {"outRefundNo": "R1", "refundAmount": Decimal(1), "refundCurrency": "USD", "outTradeNo": "NO_SUCH"},
    "refundQuery": {"outRefundNo": "R1"},
    "inquirePaymentToken": {"userId": "nobody", "tokenScope": "tokenAcq"},
    "removePaymentToken": {"userId": "nobody", "paymentTokenID": "PMTOKEN1"},
}


@pytest.mark.parametrize(
    ("endpoint", "version", "code"),
    [
        ("orderQuery", "1.4", "ORDER_NOT_EXIST"),
        ("orderQuery", "1.5", "ORDER_NOT_EXIST"),
        ("orderQuery", "2.0", "PARAMS_INVALID"),
        ("refund", "1.4", "ORDER_NOT_EXIST"),
        ("refundQuery", "1.5", "ORDER_NOT_EXIST"),
        ("inquirePaymentToken", "1.4", "PARAMS_INVALID"),
        ("removePaymentToken", "1.4", "PARAMS_INVALID"),
        ("removePaymentToken", "1.0", "PARAMS_INVALID"),
    ],
)
def test_versions_per_endpoint(merchant: MerchantCaller, endpoint: str, version: str, code: str) -> None:
    assert merchant.call(endpoint, VERSION_DATA[endpoint], version=version).code == code


@pytest.mark.parametrize(
    ("endpoint", "code"),
    [
        ("orderQuery", "ORDER_NOT_EXIST"),
        ("refund", "ORDER_NOT_EXIST"),
        ("refundQuery", "ORDER_NOT_EXIST"),
        ("inquirePaymentToken", "APPLY_SUCCESS"),
        ("removePaymentToken", "PARAMS_INVALID"),  # the token is unknown: the envelope passed
    ],
)
def test_version_1_2_reaches_every_endpoint(merchant: MerchantCaller, endpoint: str, code: str) -> None:
    """The official PHP SDK sends "1.2" on every API (WIRE.md §26); the OpenAPI version has no enum."""
    answer = merchant.call(endpoint, VERSION_DATA[endpoint], version="1.2")
    assert (answer.code, answer.body["msg"]) != ("PARAMS_INVALID", "version is invalid")
    assert answer.code == code


def test_version_1_2_creates_and_pays_an_order(merchant: MerchantCaller) -> None:
    """An orderAndPay in 1.2 is a real order, not just a request past the envelope."""
    answer = merchant.call("orderAndPay", direct_order("V12_1"), version="1.2")
    assert (answer.code, answer.data["status"]) == ("APPLY_SUCCESS", "SUCCESS")
    assert merchant.call("orderQuery", {"outTradeNo": "V12_1"}, version="1.2").data["status"] == "SUCCESS"


def test_checks_run_in_documented_order(merchant: MerchantCaller) -> None:
    """Bad appId beats a stale time, a stale time beats a bad keyVersion, which beats version."""
    stale = format_time(merchant.clock() - timedelta(hours=1))
    assert merchant.call("orderQuery", QUERY, appId="X", requestTime=stale).code == "MERCHANT_APP_INVALID"
    answer = merchant.call("orderQuery", QUERY, requestTime=stale, keyVersion="9", version="0")
    assert (answer.code, answer.body["msg"]) == ("PARAMS_INVALID", "requestTime is out of the allowed range")
    answer = merchant.call("orderQuery", QUERY, keyVersion="9", version="0")
    assert answer.body["msg"] == "keyVersion is invalid"


def test_every_answer_verifies_with_the_platform_key_only(
    merchant: MerchantCaller, platform_keys: PortalKeyPair, other_keys: PortalKeyPair
) -> None:
    answer = merchant.call("orderAndPay", hosted_order("SIGNED_1"))
    assert answer.sign is not None
    assert Verifier.from_values([platform_keys.public_key], setting="p").verify(answer.raw, answer.sign)
    assert not Verifier.from_values([other_keys.public_key], setting="o").verify(answer.raw, answer.sign)


def test_answers_are_compact_json_with_amounts_as_numbers(merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", hosted_order("COMPACT_1", totalAmount="12.5"))
    answer = merchant.call("orderQuery", {"outTradeNo": "COMPACT_1"})
    assert b'"totalAmount":12.50' in answer.raw
    assert b": " not in answer.raw
    assert answer.body["msg"] == "Success."


def test_unknown_gateway_paths_are_404(sim: RunningSimulator) -> None:
    assert httpx.post(f"{sim.base_url}/aggregate-pay/api/gateway/paymentOrderPay", content=b"{}").status_code == 404


@pytest.mark.parametrize(
    ("path_key", "endpoint", "data"),
    [
        ("orderAndPay", "orderAndPay", hosted_order("REQ_1", notify_url="https://shop.example/notify")),
        ("orderAndPay:direct", "orderAndPay", direct_order("REQ_2", token_id="PMTOKEN1")),
        ("orderQuery", "orderQuery", QUERY),
        (
            "refund",
            "refund",
            {"outRefundNo": "R", "refundAmount": Decimal(1), "refundCurrency": "USD", "outTradeNo": "O"},
        ),
        ("refundQuery", "refundQuery", {"outRefundNo": "R"}),
        ("inquirePaymentToken", "inquirePaymentToken", {"userId": "u", "tokenScope": "tokenAcq"}),
        ("removePaymentToken", "removePaymentToken", {"userId": "u", "paymentTokenID": "PMTOKEN1"}),
    ],
)
def test_the_test_requests_match_the_official_request_schemas(
    merchant: MerchantCaller, path_key: str, endpoint: str, data: dict[str, Any]
) -> None:
    """The requests these tests send are themselves valid, so refusals are the simulator's doing."""
    validate_request(path_key, merchant.envelope(endpoint, data))


def test_the_request_validator_catches_a_bad_request(merchant: MerchantCaller) -> None:
    with pytest.raises(SchemaMismatch, match="totalAmount"):
        validate_request("orderAndPay", merchant.envelope("orderAndPay", hosted_order("BAD", totalAmount="10")))
