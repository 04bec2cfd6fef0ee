"""``ChecusClient``: signed calls to the six merchant→gateway APIs.

Theory of operation. Every call is: build the envelope, serialize it once, sign those
bytes, POST those bytes. The answer is judged in the order WIRE.md §5 gives: transport
first (anything but a readable HTTP 200 means we do not know what happened), then
``code``, then the response signature, then the typed ``data``. Only what can be read is
believed: a body without a ``code`` (or with one that is not a string) and a code we do not
know are unknown outcomes, never refusals (``statemachine.KNOWN_CODES``); a refusal is believed
when it is unsigned (the official SDKs verify only APPLY_SUCCESS, so error answers may carry
no signature) or signed and verified, and a refusal whose ``sign`` does not verify is an
unknown outcome. APPLY_SUCCESS must always verify.

The caller gets a typed reply or one exception from ``errors``; see that module's tree.
The ``httpx.Client`` is injected: build it once per process (``build_http_client``), it
holds the connection pool and the explicit timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
import structlog

from statemachine import KNOWN_CODES
from worker.gateway.enums import APPLY_SUCCESS, GATEWAY_PATH, PROD_BASE_URL, UAT_BASE_URL, Endpoint
from worker.gateway.errors import OutcomeUnknown, RequestNotSent, rejection_for
from worker.gateway.replies import (
    OrderCreated,
    OrderStatusReply,
    PaymentToken,
    RefundAccepted,
    RefundStatusReply,
    ReplyInvalid,
    TokenRemoved,
    read_token_list,
)
from worker.gateway.requests import (
    HostedCardPayment,
    OrderQuery,
    Refund,
    RefundQuery,
    TokenInquiry,
    TokenPayment,
    TokenRemoval,
)
from worker.gateway.signing import Signer, Verifier
from worker.gateway.wire import WireFormatError, dumps, format_time, loads_object

log = structlog.get_logger("worker.gateway")
T = TypeVar("T")


class _Request(Protocol):
    @property
    def endpoint(self) -> Endpoint: ...

    def to_data(self) -> dict[str, Any]: ...


def base_url_for(env: str) -> str:
    """The built-in gateway host for ``uat`` or ``prod``."""
    try:
        return {"uat": UAT_BASE_URL, "prod": PROD_BASE_URL}[env]
    except KeyError:
        raise ValueError(f"unknown Checus environment {env!r}; expected uat or prod") from None


def build_http_client(
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 20.0,
    pool_timeout: float = 5.0,
    max_connections: int = 20,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """One pooled client per process: building one costs ~40 ms (CA bundle)."""
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=pool_timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        transport=transport,
        follow_redirects=False,
    )


class ChecusClient:
    """Typed, signed access to the Checus gateway. Thread-safe if ``http`` is."""

    def __init__(
        self,
        *,
        http: httpx.Client,
        base_url: str,
        app_id: str,
        merchant_no: str,
        signer: Signer,
        verifier: Verifier,
        key_version: str = "1",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self._http = http
        self._root = base_url.rstrip("/") + GATEWAY_PATH
        self._app_id = app_id
        self._merchant_no = merchant_no
        self._signer = signer
        self._verifier = verifier
        self._key_version = key_version
        self._clock = clock
        self._observe = observe  # (endpoint, code or reason, seconds): metrics hook, set by the composition root

    def __repr__(self) -> str:
        return f"ChecusClient(root={self._root!r}, app_id={self._app_id!r})"

    # -- the six APIs -------------------------------------------------------------------

    def create_payment(self, request: HostedCardPayment | TokenPayment) -> OrderCreated:
        """/orderAndPay. A SUCCESS here is a hint; confirm by notification or query."""
        return self._call(request, OrderCreated.read)

    def query_order(self, out_trade_no: str) -> OrderStatusReply:
        return self._call(OrderQuery(out_trade_no=out_trade_no), OrderStatusReply.read)

    def refund(self, request: Refund) -> RefundAccepted:
        return self._call(request, RefundAccepted.read)

    def query_refund(self, out_refund_no: str) -> RefundStatusReply:
        return self._call(RefundQuery(out_refund_no=out_refund_no), RefundStatusReply.read)

    def inquire_tokens(self, request: TokenInquiry) -> list[PaymentToken]:
        return self._call(request, read_token_list)

    def remove_token(self, request: TokenRemoval) -> TokenRemoved:
        return self._call(request, TokenRemoved.read)

    # -- the one path every call takes -------------------------------------------------

    def envelope(self, endpoint: Endpoint, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": endpoint.version,
            "keyVersion": self._key_version,
            "requestTime": format_time(self._clock()),
            "appId": self._app_id,
            "merchantNo": self._merchant_no,
            "data": data,
        }

    def _call(self, request: _Request, read: Callable[[Any], T]) -> T:
        endpoint = request.endpoint
        body = dumps(self.envelope(endpoint, request.to_data()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "sign": self._signer.sign(body),
        }
        started = time.perf_counter()
        try:
            response = self._http.post(self._root + endpoint.value, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._log(endpoint, started, reason="not_sent", error=type(exc).__name__)
            raise RequestNotSent(f"{endpoint}: could not connect", endpoint=endpoint) from None
        except httpx.HTTPError as exc:
            self._log(endpoint, started, reason="transport", error=type(exc).__name__)
            raise OutcomeUnknown(f"{endpoint}: {type(exc).__name__} after sending", reason="transport",
                                 endpoint=endpoint) from None
        try:
            result = self._judge(endpoint, response, read)
        except Exception as exc:
            self._log(endpoint, started, http_status=response.status_code,
                      reason=getattr(exc, "reason", "error"), code=getattr(exc, "code", None))
            raise
        self._log(endpoint, started, http_status=response.status_code, code=APPLY_SUCCESS)
        return result

    def _judge(self, endpoint: Endpoint, response: httpx.Response, read: Callable[[Any], T]) -> T:
        if response.status_code != 200:
            raise OutcomeUnknown(f"{endpoint}: HTTP {response.status_code}",
                                 reason=f"http_{response.status_code}", endpoint=endpoint)
        raw = response.content
        try:
            body = loads_object(raw)
        except WireFormatError:
            raise OutcomeUnknown(f"{endpoint}: unreadable response", reason="malformed_response",
                                 endpoint=endpoint) from None
        code = body.get("code")
        if not isinstance(code, str) or code not in KNOWN_CODES:
            raise OutcomeUnknown(f"{endpoint}: answer without a code we know", reason="unreadable_code",
                                 endpoint=endpoint)
        sign = response.headers.get("sign")
        if code != APPLY_SUCCESS:
            if sign is not None and not self._verifier.verify(raw, sign):
                raise OutcomeUnknown(f"{endpoint}: refusal signature did not verify", reason="bad_signature",
                                     endpoint=endpoint)
            data = body.get("data") if isinstance(body.get("data"), dict) else None
            msg = str(body.get("msg") or "")[:256]
            raise rejection_for(code, msg, endpoint=endpoint, data=data)
        if not self._verifier.verify(raw, sign):
            raise OutcomeUnknown(f"{endpoint}: response signature did not verify", reason="bad_signature",
                                 endpoint=endpoint)
        try:
            return read(body.get("data"))
        except ReplyInvalid as exc:
            raise OutcomeUnknown(f"{endpoint}: response data unreadable: {exc}", reason="unreadable_response",
                                 endpoint=endpoint) from None

    def _log(self, endpoint: Endpoint, started: float, **fields: Any) -> None:
        elapsed = time.perf_counter() - started
        log.info("gateway.call", endpoint=endpoint.value, latency_ms=round(elapsed * 1000, 2), **fields)
        if self._observe is not None:
            self._observe(endpoint.value, str(fields.get("code") or fields.get("reason") or "unknown"), elapsed)
