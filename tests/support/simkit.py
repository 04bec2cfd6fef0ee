"""Tools for driving a simulator from tests or by hand: a signed caller and simulators of a test's own.

``MerchantCaller`` builds envelopes, signs the exact bytes it sends with the merchant key and
verifies each answer's ``sign`` with the platform key. It deliberately shares no code with
``worker.gateway.client`` (only the signing and wire primitives), so tests of the simulator
do not lean on the code the simulator exists to test, and vice versa.

The notification sink that goes with it is in ``notification_sink``.

``simulator_config``/``own_simulator`` give a test a simulator of its own with some setting changed,
and a caller for it, stopped again when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import httpx

from worker.devtools.simulator.config import SimulatorConfig
from worker.devtools.simulator.notifier import tls_context
from worker.devtools.simulator.server import RunningSimulator, start_background
from worker.gateway.signing import PortalKeyPair, Signer, Verifier
from worker.gateway.wire import dumps, format_time, loads_object

GATEWAY_PREFIX = "/aggregate-pay/api/gateway/"
TOKEN_ENDPOINTS = frozenset({"inquirePaymentToken", "removePaymentToken"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One gateway answer: raw bytes as received, their ``sign``, and the parsed body."""

    status_code: int
    raw: bytes
    sign: str | None
    signature_ok: bool
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        return self.body.get("code")

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data")
        return data if isinstance(data, dict) else {}


@lru_cache(maxsize=8)
def _signer(private_key: str) -> Signer:
    """Loading (and validating) an RSA private key takes ~50 ms; tests build many callers."""
    return Signer.from_value(private_key, setting="merchant_private_key")


Inspector = Callable[[str, Mapping[str, Any], Answer], None]


class MerchantCaller:
    """``inspect(endpoint, data, answer)`` sees every checked answer (schema checks, say)."""

    def __init__(
        self,
        base_url: str,
        *,
        app_id: str,
        merchant_no: str,
        merchant_private_key: str,
        platform_public_key: str,
        clock: Callable[[], datetime] | None = None,
        inspect: Inspector | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.app_id, self.merchant_no = app_id, merchant_no
        self.signer = _signer(merchant_private_key)
        self.verifier = Verifier.from_values([platform_public_key], setting="platform_public_key")
        self.clock = clock or (lambda: datetime.now(UTC))
        self.inspect = inspect
        self.http = httpx.Client(base_url=base_url, timeout=timeout, verify=tls_context())

    def close(self) -> None:
        self.http.close()

    def envelope(self, endpoint: str, data: Mapping[str, Any], /, **overrides: Any) -> dict[str, Any]:
        """The request envelope; ``overrides`` replace (or, as None, remove) envelope fields."""
        envelope: dict[str, Any] = {
            "version": "1.2" if endpoint in TOKEN_ENDPOINTS else "1.4",
            "keyVersion": "1",
            "requestTime": format_time(self.clock()),
            "appId": self.app_id,
            "merchantNo": self.merchant_no,
            "data": dict(data),
        }
        envelope.update(overrides)
        return {key: value for key, value in envelope.items() if value is not None}

    def call(self, endpoint: str, data: Mapping[str, Any], /, *, check: bool = True, **overrides: Any) -> Answer:
        """Sign and send one envelope; ``check`` hands the answer to ``inspect``."""
        raw = dumps(self.envelope(endpoint, data, **overrides))
        answer = self.send(endpoint, raw, sign=self.signer.sign(raw))
        if check and self.inspect is not None:
            self.inspect(endpoint, data, answer)
        return answer

    def send(self, endpoint: str, raw: bytes, *, sign: str | None, content_type: str = "application/json") -> Answer:
        """Send exact bytes with exactly this ``sign`` header (None: no header at all)."""
        headers = {"content-type": content_type}
        if sign is not None:
            headers["sign"] = sign
        response = self.http.post(GATEWAY_PREFIX + endpoint, content=raw, headers=headers)
        return _answer(response, self.verifier)


def caller_for(
    running: Any,
    merchant_private_key: str,
    platform_public_key: str,
    *,
    inspect: Inspector | None = None,
    virtual_clock: bool = True,
) -> MerchantCaller:
    """A caller for a ``RunningSimulator``; by default ``requestTime`` follows its virtual clock."""
    return MerchantCaller(
        running.base_url,
        app_id=running.config.app_id,
        merchant_no=running.config.merchant_no,
        merchant_private_key=merchant_private_key,
        platform_public_key=platform_public_key,
        clock=running.runtime.clock.now if virtual_clock else None,
        inspect=inspect,
    )


def simulator_config(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair, **options: Any) -> SimulatorConfig:
    """The tests' simulator (APP_TEST, MERCHANT_TEST, these keys); ``options`` set other settings."""
    return SimulatorConfig(
        app_id="APP_TEST",
        merchant_no="MERCHANT_TEST",
        merchant_public_keys=(merchant_keys.public_key,),
        platform_private_key=platform_keys.private_key,
        **options,
    )


@contextlib.contextmanager
def own_simulator(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair, *, inspect: Inspector | None = None, **options: Any
) -> Iterator[tuple[RunningSimulator, MerchantCaller]]:
    """A simulator started with ``simulator_config(..., **options)`` and a caller for it; on leaving
    the block the caller is closed and the simulator stopped."""
    running = start_background(simulator_config(merchant_keys, platform_keys, **options))
    try:
        caller = caller_for(running, merchant_keys.private_key, platform_keys.public_key, inspect=inspect)
        try:
            yield running, caller
        finally:
            caller.close()
    finally:
        running.stop()


def _answer(response: httpx.Response, verifier: Verifier) -> Answer:
    sign = response.headers.get("sign")
    try:
        body = loads_object(response.content)
    except ValueError:
        body = {}
    return Answer(
        status_code=response.status_code,
        raw=response.content,
        sign=sign,
        signature_ok=verifier.verify(response.content, sign),
        body=body,
    )






def hosted_order(
    out_trade_no: str, *, notify_url: str | None = None, detail: Mapping[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """``data`` for a Hosted_Checkout card order; ``fields`` override or add top-level fields."""
    data: dict[str, Any] = {
        "outTradeNo": out_trade_no,
        "integrate": "Hosted_Checkout",
        "subject": "Simulator order",
        "totalAmount": Decimal("10.00"),
        "currency": "USD",
        "country": "US",
        "userId": "user_1",
        "frontCallbackUrl": "https://shop.example/return",
        "paymentDetail": {"paymentMethodType": "CARD", **(detail or {})},
    }
    if notify_url is not None:
        data["notifyUrl"] = notify_url
    return {**data, **fields}


def direct_order(
    out_trade_no: str,
    *,
    subject: str = "SUCCESS",
    token_id: str | None = None,
    notify_url: str | None = None,
    detail: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """``data`` for a Direct_Payment card order, or a token payment when ``token_id`` is given."""
    payment_detail: dict[str, Any] = {
        "paymentMethodType": "CARD",
        "buyerInfo": {"clientIp": "203.0.113.7", "userAgent": "Mozilla/5.0 (simulator test)"},
    }
    if token_id is not None:
        payment_detail["paymentTokenID"] = token_id
    data = hosted_order(
        out_trade_no, notify_url=notify_url, subject=subject, integrate="Direct_Payment", terminalType="WEB"
    )
    data.pop("frontCallbackUrl")
    data["paymentDetail"] = {**payment_detail, **(detail or {})}
    return {**data, **fields}


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds; raise ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(interval)
