"""The common envelope, both ways: open a signed request, seal a signed reply.

Order of checks (WIRE.md §26), each failing with the first code that applies:
the ``sign`` header over the raw bytes (``SIGN_VERIFY_FAILED``) *before* anything is parsed;
then ``Content-Type``, JSON and required fields (``PARAMS_INVALID``); ``appId``
(``MERCHANT_APP_INVALID``); ``merchantNo`` when present (``MERCHANT_INVALID``); ``requestTime``
against the virtual clock; ``keyVersion``; ``version`` per endpoint (1.2 everywhere, 1.4/1.5 too on
the payment and refund APIs). Every reply, error or
not, is serialized once and those bytes are signed with the platform key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.gateway.signing import Signer, Verifier
from worker.gateway.wire import WireFormatError, dumps, loads_object, parse_time

APPLY_SUCCESS = "APPLY_SUCCESS"
SUCCESS_MSG = "Success."
# The official PHP SDK sends "1.2" on every API, the Java SDK "1.4", the old orderAndPay page "1.5";
# the OpenAPI ``version`` has no enum (WIRE.md §26): refusing one of them refuses a real client.
PAYMENT_VERSIONS = frozenset({"1.2", "1.4", "1.5"})
TOKEN_VERSIONS = frozenset({"1.2"})
VERSIONS: Mapping[str, frozenset[str]] = {
    "orderAndPay": PAYMENT_VERSIONS,
    "orderQuery": PAYMENT_VERSIONS,
    "refund": PAYMENT_VERSIONS,
    "refundQuery": PAYMENT_VERSIONS,
    "inquirePaymentToken": TOKEN_VERSIONS,
    "removePaymentToken": TOKEN_VERSIONS,
}
MESSAGES: Mapping[str, str] = {
    "SIGN_VERIFY_FAILED": "The signature verify failed.",
    "SYSTEM_ERROR": "System is busy, please try again later.",
    "UNEXPECTED_ERROR": "Unexpected error, please contact support.",
    "REQUEST_TIMEOUT": "Request timeout.",
    "MERCHANT_APP_INVALID": "Signature key is not configured.",
    "MERCHANT_INVALID": "Merchant is not registered or abnormal.",
    "ORDER_NOT_EXIST": "Order does not exist.",
    "ORDER_REPEAT": "Duplicate order",
    "REFUND_INSUFFICIENT_BALANCE": "Insufficient balance for refund.",
}
_ENVELOPE_STRINGS = ("version", "keyVersion", "requestTime", "appId")


class Rejected(Exception):
    """Stop handling a request and answer ``code``; only ORDER_REPEAT-like answers carry data."""

    def __init__(self, code: str, msg: str | None = None, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(code)
        self.reply = Reply(code=code, msg=msg if msg is not None else MESSAGES.get(code, code), data=data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    code: str
    msg: str
    data: Mapping[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            body["data"] = dict(self.data)
        return body


def ok(data: Mapping[str, Any]) -> Reply:
    return Reply(code=APPLY_SUCCESS, msg=SUCCESS_MSG, data=data)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeRules:
    app_id: str
    merchant_no: str
    tolerance_seconds: float
    lenient_clock: bool
    clock_error_code: str


def open_envelope(
    endpoint: str,
    raw: bytes,
    *,
    sign: str | None,
    content_type: str | None,
    verifier: Verifier,
    rules: EnvelopeRules,
    now: datetime,
) -> dict[str, Any]:
    """Verify and check a request; return its ``data`` object or raise ``Rejected``."""
    if not verifier.verify(raw, sign):
        raise Rejected("SIGN_VERIFY_FAILED")
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise Rejected("PARAMS_INVALID", "Content-Type must be application/json")
    envelope = _parse(raw)
    if envelope["appId"] != rules.app_id:
        raise Rejected("MERCHANT_APP_INVALID")
    merchant_no = envelope.get("merchantNo")
    if merchant_no is not None and merchant_no != rules.merchant_no:
        raise Rejected("MERCHANT_INVALID")
    _check_time(envelope["requestTime"], rules, now)
    if envelope["keyVersion"] != "1":
        raise Rejected("PARAMS_INVALID", "keyVersion is invalid")
    if envelope["version"] not in VERSIONS[endpoint]:
        raise Rejected("PARAMS_INVALID", "version is invalid")
    data: dict[str, Any] = envelope["data"]
    return data


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        envelope = loads_object(raw)
    except WireFormatError:
        raise Rejected("PARAMS_INVALID", "request body is not a JSON object") from None
    for name in _ENVELOPE_STRINGS:
        if not isinstance(envelope.get(name), str) or not envelope[name]:
            raise Rejected("PARAMS_INVALID", f"{name} is required")
    if not isinstance(envelope.get("data"), dict):
        raise Rejected("PARAMS_INVALID", "data is required")
    return envelope


def _check_time(value: str, rules: EnvelopeRules, now: datetime) -> None:
    moment = parse_time(value)
    if moment is None:
        raise Rejected(rules.clock_error_code, "requestTime is not RFC 3339")
    skew = abs((moment - now).total_seconds())
    if not rules.lenient_clock and skew > rules.tolerance_seconds:
        raise Rejected(rules.clock_error_code, "requestTime is out of the allowed range")


def seal(
    body: Mapping[str, Any], signer: Signer, *, unsigned: bool = False, spoil: bool = False
) -> tuple[bytes, dict[str, str]]:
    """Serialize once and sign those bytes; ``unsigned``/``spoil`` exist for negative tests."""
    raw = dumps(body)
    headers = {"content-type": "application/json"}
    if not unsigned:
        headers["sign"] = signer.sign(raw + b" " if spoil else raw)
    return raw, headers
