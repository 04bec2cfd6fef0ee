"""ChecusClient against the simulator over real loopback HTTP: every endpoint, status and documented error.

Every request the client sends and every answer it gets is validated against the official
PayerMax OpenAPI subset, through httpx event hooks on the real transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.openapi import path_key_for, validate_request, validate_response
from worker.gateway import (
    ChecusClient,
    DuplicateRequest,
    GatewayRejected,
    OutcomeUnknown,
    PaymentStatus,
    RecordNotFound,
    RefundStatus,
    Signer,
    TokenStatus,
    Verifier,
)
from worker.gateway.requests import HostedCardPayment, Refund, TokenInquiry, TokenPayment, TokenRemoval
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import loads_object

Sim = Any  # worker.devtools.simulator.server.RunningSimulator


class SchemaHooks:
    """httpx hooks that validate each request and response body against the OpenAPI subset."""

    def __init__(self) -> None:
        self.checked = 0
        self._pending: dict[int, str] = {}

    def request(self, request: httpx.Request) -> None:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        body = loads_object(request.content)
        key = path_key_for(endpoint, body["data"])
        validate_request(key, body)
        self._pending[id(request)] = key
        self.checked += 1

    def response(self, response: httpx.Response) -> None:
        response.read()
        key = self._pending.pop(id(response.request), None)
        if key and response.status_code == 200 and response.content.startswith(b"{"):
            validate_response(key, loads_object(response.content))
            self.checked += 1


@pytest.fixture
def hooks() -> SchemaHooks:
    return SchemaHooks()


def make_client(sim: Sim, merchant: PortalKeyPair, platform: PortalKeyPair, hooks: SchemaHooks, *,
                app_id: str = "APP_TEST", clock_skew: timedelta = timedelta(0), read_timeout: float = 5.0,
                ) -> ChecusClient:
    http = httpx.Client(timeout=httpx.Timeout(read_timeout, connect=2.0),
                        event_hooks={"request": [hooks.request], "response": [hooks.response]})
    return ChecusClient(http=http, base_url=sim.base_url, app_id=app_id, merchant_no="MERCHANT_TEST",
                        signer=Signer.from_value(merchant.private_key, setting="merchant"),
                        verifier=Verifier.from_values([platform.public_key], setting="platform"),
                        clock=lambda: datetime.now(UTC) + clock_skew)


@pytest.fixture
def client(sim: Sim, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair,
           hooks: SchemaHooks) -> Iterator[ChecusClient]:
    yield make_client(sim, merchant_keys, platform_keys, hooks)
    assert hooks.checked > 0


def control(sim: Sim, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{sim.base_url}/__sim{path}", json=body, timeout=5)
    response.raise_for_status()
    return response.json() if response.content else None


def hosted(no: str, *, amount: str = "100.00", currency: str = "USD", save: bool = True,
           user: str = "u1") -> HostedCardPayment:
    return HostedCardPayment(out_trade_no=no, subject="Test order", amount=Decimal(amount), currency=currency,
                             user_id=user, front_callback_url="https://shop.test/return", country="US",
                             token_for_future_use=save, allowed_card_orgs=("VISA",))


def paid(client: ChecusClient, sim: Sim, no: str, **kwargs: Any) -> str | None:
    client.create_payment(hosted(no, **kwargs))
    control(sim, "POST", f"/orders/{no}/complete", {"status": "SUCCESS", "notify": False})
    return client.query_order(no).payment_token_id


def token_payment(no: str, token: str, *, subject: str = "Again", user: str = "u1") -> TokenPayment:
    return TokenPayment(out_trade_no=no, subject=subject, amount=Decimal("25.00"), currency="USD", country="US",
                        user_id=user, payment_token_id=token, client_ip="127.0.0.1", user_agent="pytest")


def test_hosted_payment_lifecycle_and_token(client: ChecusClient, sim: Sim) -> None:
    created = client.create_payment(hosted("C_HOSTED"))
    assert created.status is PaymentStatus.PENDING and created.redirect_url and created.trade_token.startswith("T")
    assert client.query_order("c_hosted").status is PaymentStatus.PENDING  # outTradeNo is case-insensitive
    control(sim, "POST", "/orders/C_HOSTED/complete", {"status": "SUCCESS", "notify": False})
    state = client.query_order("C_HOSTED")
    assert state.status is PaymentStatus.SUCCESS and state.amount == Decimal("100.00")
    assert state.payment_token_id and state.payment_token_id.startswith("PMTOKEN")
    assert state.complete_time is not None and state.payment_details[0].masked_card


@pytest.mark.parametrize("status", ["FAILED", "CLOSED"])
def test_failed_and_closed_orders(client: ChecusClient, sim: Sim, status: str) -> None:
    client.create_payment(hosted(f"C_{status}"))
    control(sim, "POST", f"/orders/C_{status}/complete", {"status": status, "notify": False})
    state = client.query_order(f"C_{status}")
    assert state.status.value == status and state.payment_details == () and state.payment_token_id is None


def test_expiry_closes_the_order(client: ChecusClient, sim: Sim, merchant_keys: PortalKeyPair,
                                 platform_keys: PortalKeyPair, hooks: SchemaHooks) -> None:
    client.create_payment(hosted("C_EXPIRES"))
    control(sim, "POST", "/clock/advance", {"seconds": 86400 + 1})
    later = make_client(sim, merchant_keys, platform_keys, hooks, clock_skew=timedelta(seconds=86401))
    assert later.query_order("C_EXPIRES").status is PaymentStatus.CLOSED


def test_token_payments_sync_3ds_and_refused_tokens(client: ChecusClient, sim: Sim) -> None:
    token = paid(client, sim, "C_FIRST")
    assert token is not None
    sync = client.create_payment(token_payment("C_TOKEN", token))
    assert sync.status is PaymentStatus.SUCCESS and sync.redirect_url is None
    challenged = client.create_payment(token_payment("C_3DS", token, subject="3DS"))
    assert challenged.status is PaymentStatus.PENDING and challenged.redirect_url
    with pytest.raises(GatewayRejected) as foreign:
        client.create_payment(token_payment("C_FOREIGN", token, user="intruder"))
    assert foreign.value.code == "PARAMS_INVALID"
    removed = client.remove_token(TokenRemoval(user_id="u1", payment_token_id=token))
    assert removed.status is TokenStatus.DELETED
    assert client.remove_token(TokenRemoval(user_id="u1", payment_token_id=token)).status is TokenStatus.DELETED
    with pytest.raises(GatewayRejected):
        client.create_payment(token_payment("C_DELETED", token))


def test_token_inquiry(client: ChecusClient, sim: Sim) -> None:
    token = paid(client, sim, "C_TOKLIST")
    tokens = client.inquire_tokens(TokenInquiry(user_id="u1"))
    assert [(t.payment_token_id, t.status) for t in tokens] == [(token, TokenStatus.ACTIVATED)]
    assert client.inquire_tokens(TokenInquiry(user_id="nobody")) == []


def test_duplicate_order_and_unknown_order(client: ChecusClient) -> None:
    first = client.create_payment(hosted("C_DUP"))
    with pytest.raises(DuplicateRequest) as info:
        client.create_payment(hosted("c_dup"))
    assert info.value.data.get("tradeToken") == first.trade_token
    with pytest.raises(RecordNotFound):
        client.query_order("C_NEVER")


def test_refunds_partial_multiple_and_their_rules(client: ChecusClient, sim: Sim) -> None:
    paid(client, sim, "C_REFUND")
    first = client.refund(Refund(out_refund_no="C_R1", out_trade_no="C_REFUND", amount=Decimal("30"), currency="USD"))
    assert first.status is RefundStatus.REFUND_PENDING and first.refund_trade_no
    with pytest.raises(GatewayRejected) as busy:  # one refund in progress at a time
        client.refund(Refund(out_refund_no="C_R2", out_trade_no="C_REFUND", amount=Decimal("10"), currency="USD"))
    assert busy.value.code == "REFUND_FAILED"
    replay = client.refund(Refund(out_refund_no="C_R1", out_trade_no="C_REFUND", amount=Decimal("30"), currency="USD"))
    assert replay.status is RefundStatus.REFUND_PENDING  # same request again: replayed, not repeated
    with pytest.raises(DuplicateRequest):
        client.refund(Refund(out_refund_no="C_R1", out_trade_no="C_REFUND", amount=Decimal("31"), currency="USD"))
    control(sim, "POST", "/refunds/C_R1/complete", {"status": "REFUND_SUCCESS", "notify": False})
    state = client.query_refund("C_R1")
    assert state.status is RefundStatus.REFUND_SUCCESS and state.amount == Decimal("30.00") and state.finish_time
    with pytest.raises(GatewayRejected) as over:
        client.refund(Refund(out_refund_no="C_R3", out_trade_no="C_REFUND", amount=Decimal("70.01"), currency="USD"))
    assert over.value.code == "AMOUNT_INVALID"
    with pytest.raises(GatewayRejected) as currency:
        client.refund(Refund(out_refund_no="C_R4", out_trade_no="C_REFUND", amount=Decimal("1"), currency="EUR"))
    assert currency.value.code == "CURRENCY_INVALID"
    assert client.refund(Refund(out_refund_no="C_R5", out_trade_no="C_REFUND", amount=Decimal("70"),
                                currency="USD")).status is RefundStatus.REFUND_PENDING
    ledger = control(sim, "GET", "/ledger")
    assert ledger["refunds"] == {"C_R1": 1, "C_R5": 1}


def test_refund_errors(client: ChecusClient) -> None:
    with pytest.raises(RecordNotFound):
        client.refund(Refund(out_refund_no="C_RX", out_trade_no="C_NOPE", amount=Decimal(1), currency="USD"))
    client.create_payment(hosted("C_UNPAID"))
    with pytest.raises(GatewayRejected) as unpaid:
        client.refund(Refund(out_refund_no="C_RY", out_trade_no="C_UNPAID", amount=Decimal(1), currency="USD"))
    assert unpaid.value.code == "PARAMS_INVALID"
    with pytest.raises(RecordNotFound):
        client.query_refund("C_RZ")


def test_our_bad_signature_is_refused(sim: Sim, other_keys: PortalKeyPair, platform_keys: PortalKeyPair,
                                      hooks: SchemaHooks) -> None:
    stranger = make_client(sim, other_keys, platform_keys, hooks)
    with pytest.raises(GatewayRejected) as info:
        stranger.query_order("C_ANY")
    assert info.value.code == "SIGN_VERIFY_FAILED"


@pytest.mark.parametrize("fault", [{"bad_signature": True}, {"unsigned": True}])
def test_their_bad_signature_is_outcome_unknown(client: ChecusClient, sim: Sim, fault: dict[str, Any]) -> None:
    client.create_payment(hosted("C_SIGNED"))
    control(sim, "PUT", "/faults", {"endpoints": {"orderQuery": fault}})
    with pytest.raises(OutcomeUnknown) as info:
        client.query_order("C_SIGNED")
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize(("fault", "reason"), [
    ({"error_rate": 1, "error_code": "http_500"}, "http_500"),
    ({"error_rate": 1, "error_code": "SYSTEM_ERROR"}, "gateway_system_error"),
    ({"drop_rate": 1}, "transport"),
    ({"timeout_rate": 1, "timeout_seconds": 2}, "transport"),
])
def test_gateway_trouble_on_refund_is_outcome_unknown(sim: Sim, merchant_keys: PortalKeyPair,
                                                      platform_keys: PortalKeyPair, hooks: SchemaHooks,
                                                      fault: dict[str, Any], reason: str) -> None:
    """A refund whose answer is lost may have happened: the client says 'unknown', never 'failed'."""
    client = make_client(sim, merchant_keys, platform_keys, hooks, read_timeout=0.5)
    paid(client, sim, "C_TROUBLE")
    control(sim, "PUT", "/faults", {"endpoints": {"refund": fault}})
    with pytest.raises(OutcomeUnknown) as info:
        client.refund(Refund(out_refund_no="C_RT", out_trade_no="C_TROUBLE", amount=Decimal(1), currency="USD"))
    assert info.value.reason == reason


@pytest.mark.parametrize(("skew", "app_id", "code"), [
    (timedelta(minutes=5), "APP_TEST", "PARAMS_INVALID"),
    (timedelta(0), "APP_OTHER", "MERCHANT_APP_INVALID"),
])
def test_envelope_errors(sim: Sim, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair, hooks: SchemaHooks,
                         skew: timedelta, app_id: str, code: str) -> None:
    client = make_client(sim, merchant_keys, platform_keys, hooks, app_id=app_id, clock_skew=skew)
    with pytest.raises(GatewayRejected) as info:
        client.query_order("C_ANY")
    assert info.value.code == code


def test_amounts_keep_each_currency_exponent(client: ChecusClient, sim: Sim) -> None:
    client.create_payment(hosted("C_IDR", amount="15000", currency="IDR"))
    assert client.query_order("C_IDR").amount == Decimal(15000)
    client.create_payment(hosted("C_KWD", amount="1.25", currency="KWD"))
    assert client.query_order("C_KWD").amount == Decimal("1.25")


class RequestHooks(SchemaHooks):
    """Requests still validated; answers not, because these answers are broken on purpose."""

    def response(self, response: httpx.Response) -> None:
        self._pending.pop(id(response.request), None)


@pytest.mark.parametrize("endpoint", ["orderAndPay", "refund"])
def test_an_answer_without_a_code_is_outcome_unknown_and_the_effect_is_there(
        sim: Sim, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair, endpoint: str) -> None:
    """The gateway did the work and answered ``{}`` / ``{"error":..}`` / ``{"code":null}``: never 'failed'."""
    hooks = RequestHooks()
    client = make_client(sim, merchant_keys, platform_keys, hooks)
    paid(client, sim, "C_NOCODE")
    control(sim, "PUT", "/faults", {"endpoints": {endpoint: {"no_code_rate": 1}}})
    for i in range(3):  # three draws: whichever bodies they are, none is readable
        with pytest.raises(OutcomeUnknown) as info:
            if endpoint == "orderAndPay":
                client.create_payment(hosted(f"C_NC_{i}"))
            else:
                client.refund(Refund(out_refund_no=f"C_NCR_{i}", out_trade_no="C_NOCODE", amount=Decimal(1),
                                     currency="USD"))
        assert info.value.reason == "unreadable_code"
        if endpoint == "refund":  # it exists: settle it, or the next one is refused as "refund in progress"
            control(sim, "POST", f"/refunds/C_NCR_{i}/complete", {"notify": False})
    control(sim, "DELETE", "/faults")
    if endpoint == "orderAndPay":
        assert client.query_order("C_NC_2").status is PaymentStatus.PENDING
    else:
        assert client.query_refund("C_NCR_2").status is RefundStatus.REFUND_SUCCESS


def test_the_client_s_widest_requests_pass_the_schema_rules(client: ChecusClient, sim: Sim) -> None:
    """The product never sends what the simulator refuses: a 16-character language, expireTime as a
    string, terminalType on a token payment (and it refuses a longer language before sending)."""
    wide = HostedCardPayment(out_trade_no="C_WIDE", subject="Wide", amount=Decimal("5.00"), currency="USD",
                             user_id="u1", front_callback_url="https://shop.test/return", country="US",
                             expire_seconds=3600, language="zh-Hant-TW-x-abc")
    assert client.create_payment(wide).status is PaymentStatus.PENDING
    assert sim.state.order("C_WIDE").expire_at - sim.state.order("C_WIDE").created_at == timedelta(seconds=3600)
    token = paid(client, sim, "C_WIDE_FIRST")
    assert token is not None
    assert client.create_payment(token_payment("C_WIDE_TOKEN", token)).status is PaymentStatus.SUCCESS
    with pytest.raises(ValueError, match="language"):
        HostedCardPayment(out_trade_no="C_WIDER", subject="Wide", amount=Decimal("5.00"), currency="USD",
                          user_id="u1", front_callback_url="https://shop.test/return", language="x" * 17)
