"""ChecusClient against httpx.MockTransport: envelope, signing, and the exception tree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from worker.gateway import (
    ChecusClient,
    DuplicateRequest,
    GatewayRejected,
    OutcomeUnknown,
    PaymentStatus,
    RecordNotFound,
    RequestInvalid,
    RequestNotSent,
    Signer,
    Verifier,
)
from worker.gateway.requests import HostedCardPayment, Refund, TokenInquiry, TokenPayment, TokenRemoval
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import dumps, loads_object

Handler = Callable[[httpx.Request], httpx.Response]
NOW = datetime(2026, 11, 22, 8, 30, 0, 123000, tzinfo=UTC)


class Gateway:
    """A scripted peer: records requests, answers with signed or unsigned bodies."""

    def __init__(self, platform: PortalKeyPair) -> None:
        self.signer = Signer.from_value(platform.private_key, setting="platform")
        self.requests: list[httpx.Request] = []
        self.answer: Handler = lambda _r: self.signed({"code": "APPLY_SUCCESS", "msg": "", "data": {}})

    def signed(self, body: dict[str, Any], *, sign: bool = True, status: int = 200) -> httpx.Response:
        raw = dumps(body)
        headers = {"sign": self.signer.sign(raw)} if sign else {}
        return httpx.Response(status, content=raw, headers=headers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def gateway(platform_keys: PortalKeyPair) -> Gateway:
    return Gateway(platform_keys)


@pytest.fixture
def client(gateway: Gateway, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> ChecusClient:
    return ChecusClient(
        http=httpx.Client(transport=httpx.MockTransport(gateway)),
        base_url="https://gw.test",
        app_id="APP1",
        merchant_no="M1",
        signer=Signer.from_value(merchant_keys.private_key, setting="merchant"),
        verifier=Verifier.from_values([platform_keys.public_key], setting="platform"),
        clock=lambda: NOW,
    )


def hosted(**overrides: Any) -> HostedCardPayment:
    fields: dict[str, Any] = {
        "out_trade_no": "ORDER_1", "subject": "Order 1", "amount": Decimal("10.50"), "currency": "USD",
        "user_id": "u1", "front_callback_url": "https://shop.test/back", "notify_url": "https://shop.test/n",
        "token_for_future_use": True, "allowed_card_orgs": ("VISA",), "expire_seconds": 60,
    }
    fields.update(overrides)
    return HostedCardPayment(**fields)


def created(gateway: Gateway, status: str = "PENDING") -> None:
    data = {"outTradeNo": "ORDER_1", "tradeToken": "T1", "status": status, "redirectUrl": "https://c/x"}
    gateway.answer = lambda _r: gateway.signed({"code": "APPLY_SUCCESS", "msg": "", "data": data})


def test_request_is_the_signed_envelope(client: ChecusClient, gateway: Gateway, merchant_keys: PortalKeyPair) -> None:
    """The bytes sent are the bytes signed, under the envelope with this endpoint's version."""
    created(gateway)
    reply = client.create_payment(hosted())
    assert reply.redirect_url == "https://c/x" and reply.status is PaymentStatus.PENDING
    sent = gateway.requests[0]
    assert sent.url.path == "/aggregate-pay/api/gateway/orderAndPay"
    assert Verifier.from_values([merchant_keys.public_key], setting="m").verify(sent.content, sent.headers["sign"])
    body = loads_object(sent.content)
    assert body["version"] == "1.4" and body["keyVersion"] == "1"
    assert body["requestTime"] == "2026-11-22T08:30:00.123+00:00"
    assert (body["appId"], body["merchantNo"]) == ("APP1", "M1")
    data = body["data"]
    assert data["totalAmount"] == Decimal("10.50") and b'"totalAmount":10.50' in sent.content
    assert data["expireTime"] == "1800"  # clamped up from 60
    assert data["paymentDetail"] == {"paymentMethodType": "CARD", "allowedCardOrg": ["VISA"], "tokenForFutureUse": True}


def test_token_endpoints_use_version_1_2(client: ChecusClient, gateway: Gateway) -> None:
    gateway.answer = lambda _r: gateway.signed({"code": "APPLY_SUCCESS", "msg": "", "data": {"tokenList": None}})
    assert client.inquire_tokens(TokenInquiry(user_id="u1")) == []
    assert loads_object(gateway.requests[0].content)["version"] == "1.2"


def test_token_payment_is_direct_payment_without_card_data(client: ChecusClient, gateway: Gateway) -> None:
    created(gateway, "SUCCESS")
    request = TokenPayment(
        out_trade_no="ORDER_2", subject="again", amount=Decimal(5), currency="USD", country="US", user_id="u1",
        payment_token_id="PMTOKEN123456789", client_ip="127.0.0.1", user_agent="test-agent",
    )
    assert "PMTOKEN123456789" not in repr(request)
    assert client.create_payment(request).status is PaymentStatus.SUCCESS
    data = loads_object(gateway.requests[0].content)["data"]
    assert data["integrate"] == "Direct_Payment" and data["terminalType"] == "WEB"
    assert data["paymentDetail"]["paymentTokenID"] == "PMTOKEN123456789"
    assert data["paymentDetail"]["buyerInfo"] == {"clientIp": "127.0.0.1", "userAgent": "test-agent"}


@pytest.mark.parametrize(
    ("code", "kind"),
    [("ORDER_REPEAT", DuplicateRequest), ("ORDER_NOT_EXIST", RecordNotFound), ("PARAMS_INVALID", GatewayRejected),
     ("SIGN_VERIFY_FAILED", GatewayRejected), ("SYSTEM_ERROR", OutcomeUnknown), ("UNEXPECTED_ERROR", OutcomeUnknown),
     ("REQUEST_TIMEOUT", OutcomeUnknown)],
)
def test_codes_map_onto_the_tree(client: ChecusClient, gateway: Gateway, code: str, kind: type[Exception]) -> None:
    """Rejections need no signature (the SDKs verify only APPLY_SUCCESS); gateway trouble is 'unknown'."""
    gateway.answer = lambda _r: gateway.signed({"code": code, "msg": "nope", "data": {"tradeToken": "T9"}}, sign=False)
    with pytest.raises(kind) as info:
        client.query_order("ORDER_1")
    if isinstance(info.value, GatewayRejected):
        assert info.value.code == code and info.value.msg == "nope"
    if isinstance(info.value, DuplicateRequest):
        assert info.value.data["tradeToken"] == "T9"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda g: g.signed({"code": "APPLY_SUCCESS", "data": {}}, sign=False), "bad_signature"),
        (lambda g: httpx.Response(200, content=b'{"code":"APPLY_SUCCESS"}', headers={"sign": "AAAA"}),
         "bad_signature"),
        (lambda g: g.signed({"code": "APPLY_SUCCESS"}, status=500), "http_500"),
        (lambda g: g.signed({"code": "APPLY_SUCCESS"}, status=404), "http_404"),
        (lambda g: httpx.Response(200, content=b"<html>busy</html>"), "malformed_response"),
        (lambda g: g.signed({"code": "APPLY_SUCCESS", "data": {"outTradeNo": "O", "status": "WEIRD",
                                                                 "currency": "USD", "totalAmount": 1}}),
         "unreadable_response"),
    ],
)
def test_unverifiable_answers_are_outcome_unknown(
    client: ChecusClient, gateway: Gateway, answer: Callable[[Gateway], httpx.Response], reason: str
) -> None:
    gateway.answer = lambda _r: answer(gateway)
    with pytest.raises(OutcomeUnknown) as info:
        client.query_order("ORDER_1")
    assert info.value.reason == reason
    assert not isinstance(info.value, RequestNotSent)


def _raise(exc: Exception) -> Handler:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_connect_failure_is_not_sent(client: ChecusClient, gateway: Gateway) -> None:
    gateway.answer = _raise(httpx.ConnectError("refused"))
    with pytest.raises(RequestNotSent):
        client.refund(Refund(out_refund_no="R1", out_trade_no="ORDER_1", amount=Decimal(1), currency="USD"))


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset"), httpx.ReadError("x")])
def test_failure_after_sending_is_unknown(client: ChecusClient, gateway: Gateway, exc: Exception) -> None:
    """A refund whose answer was lost may have happened: never 'failed', never 'not sent'."""
    gateway.answer = _raise(exc)
    with pytest.raises(OutcomeUnknown) as info:
        client.refund(Refund(out_refund_no="R1", out_trade_no="ORDER_1", amount=Decimal(1), currency="USD"))
    assert not isinstance(info.value, RequestNotSent)
    assert info.value.reason == "transport"


@pytest.mark.parametrize(
    "overrides",
    [{"out_trade_no": "has-dash"}, {"out_trade_no": "x" * 65}, {"out_trade_no": ""}, {"amount": 10.5},
     {"amount": Decimal("1.001")}, {"currency": "usd"}, {"subject": ""}, {"front_callback_url": ""},
     {"country": "usa"}, {"notify_url": "h" * 257}],
)
def test_invalid_requests_never_leave(gateway: Gateway, overrides: dict[str, Any]) -> None:
    with pytest.raises(RequestInvalid):
        hosted(**overrides)
    assert gateway.requests == []


def test_expire_time_is_clamped_both_ways() -> None:
    assert hosted(expire_seconds=10).expire_seconds == 1800
    assert hosted(expire_seconds=3600).expire_seconds == 3600
    assert hosted(expire_seconds=10**6).expire_seconds == 86400


def test_removal_and_its_reply(client: ChecusClient, gateway: Gateway) -> None:
    data = {"userId": "u1", "paymentTokenID": "PMTOKEN1", "paymentTokenStatus": "Deleted"}
    gateway.answer = lambda _r: gateway.signed({"code": "APPLY_SUCCESS", "msg": "Success", "data": data})
    removed = client.remove_token(TokenRemoval(user_id="u1", payment_token_id="PMTOKEN1", reason="user asked"))
    assert removed.status.value == "Deleted"
    assert "PMTOKEN1" not in repr(removed)
    assert loads_object(gateway.requests[0].content)["data"]["removeReason"] == "user asked"
