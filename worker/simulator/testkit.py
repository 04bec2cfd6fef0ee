"""Tools for driving a simulator from tests or by hand: a signed caller and a notification sink.

``MerchantCaller`` builds envelopes, signs the exact bytes it sends with the merchant key and
verifies each answer's ``sign`` with the platform key. It deliberately shares no code with
``worker.gateway.client`` (only the signing and wire primitives), so tests of the simulator
do not lean on the code the simulator exists to test, and vice versa.

``NotificationSink`` is a loopback HTTP server on its own thread that records every POST
(raw body, ``sign`` header, whether that verifies) and answers from a script, e.g. HTTP 500
twice and then the ack, so the retry ladder can be watched from the outside.

``simulator_config``/``own_simulator`` give a test a simulator of its own with some setting changed,
and a caller for it, stopped again when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from worker.gateway.signing import PortalKeyPair, Signer, Verifier
from worker.gateway.wire import ACK_BODY, dumps, format_time, loads_object
from worker.simulator.config import SimulatorConfig
from worker.simulator.notifier import tls_context
from worker.simulator.server import RunningSimulator, start_background

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """One notification as it arrived."""

    path: str
    raw: bytes
    sign: str | None
    content_type: str | None
    signature_ok: bool
    answered: int
    arrived: float = field(default_factory=time.monotonic)

    @property
    def body(self) -> dict[str, Any]:
        return loads_object(self.raw)


class NotificationSink:
    """A loopback receiver. ``answers`` are (status, body) pairs used in turn, then ``default``;
    ``delays`` hold the answers back (seconds, in turn), to make the sender time out."""

    def __init__(
        self,
        platform_public_key: str,
        *,
        answers: Iterable[tuple[int, bytes]] = (),
        default: tuple[int, bytes] = (200, ACK_BODY),
        delays: Iterable[float] = (),
    ) -> None:
        self.verifier = Verifier.from_values([platform_public_key], setting="platform_public_key")
        self._answers, self._default, self._delays = list(answers), default, list(delays)
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="sim-sink", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/notify"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least ``count`` notifications arrived; raise after ``timeout``."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(f"{len(self._received)} of {count} notifications arrived")
            return list(self._received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_answer(self) -> tuple[int, bytes, float]:
        with self._lock:
            status, body = self._answers.pop(0) if self._answers else self._default
            return status, body, self._delays.pop(0) if self._delays else 0.0

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)
            self._lock.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, reply, delay = sink._next_answer()
                sign = self.headers.get("sign")
                sink._record(
                    Received(
                        path=self.path,
                        raw=raw,
                        sign=sign,
                        content_type=self.headers.get("content-type"),
                        signature_ok=sink.verifier.verify(raw, sign),
                        answered=status,
                    )
                )
                time.sleep(delay)
                with contextlib.suppress(OSError):  # the sender may have given up waiting
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``received`` instead of stderr."""

        return Handler


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
