"""Typed requests to Checus, validated before anything is signed or sent.

Each request is a frozen value whose ``to_data()`` returns the envelope's ``data`` object.
Validation happens at construction, so an invalid request cannot exist: amounts are
``Decimal`` with the currency's exponent, ``outTradeNo`` is at most 64 letters, digits or
underscores, and ``expireTime`` is clamped into Checus's 1800–86400 s window (Checus would
"forcibly correct" it anyway; doing it here keeps our own record truthful).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.gateway.enums import Endpoint, Integrate
from worker.gateway.errors import RequestInvalid
from worker.gateway.money import AmountError, parse_amount

EXPIRE_MIN_SECONDS = 1800
EXPIRE_MAX_SECONDS = 86400
_MERCHANT_NO = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
CARD = "CARD"


def check_merchant_no(value: str, name: str) -> str:
    """``outTradeNo`` / ``outRefundNo``: 1–64 letters, digits or underscores."""
    if not isinstance(value, str) or not _MERCHANT_NO.match(value):
        raise RequestInvalid(f"{name} must be 1-64 letters, digits or underscores")
    return value


def _check_len(value: str | None, limit: int, name: str, *, required: bool = False) -> None:
    if value is None or value == "":
        if required:
            raise RequestInvalid(f"{name} is required")
        return
    if not isinstance(value, str) or len(value) > limit:
        raise RequestInvalid(f"{name} must be a string of at most {limit} characters")


def _amount(value: Decimal, currency: str, name: str) -> Decimal:
    try:
        return parse_amount(value, currency)
    except AmountError as exc:
        raise RequestInvalid(f"{name}: {exc}") from None


def clamp_expire_seconds(seconds: int) -> int:
    return max(EXPIRE_MIN_SECONDS, min(EXPIRE_MAX_SECONDS, int(seconds)))


def _put(data: dict[str, Any], key: str, value: object) -> None:
    if value is not None and value != "":
        data[key] = value


@dataclass(frozen=True, slots=True, kw_only=True)
class HostedCardPayment:
    """A first card payment on the hosted cashier, optionally offering to save the card."""

    out_trade_no: str
    subject: str
    amount: Decimal
    currency: str
    user_id: str
    front_callback_url: str
    country: str | None = None
    notify_url: str | None = None
    expire_seconds: int | None = None
    allowed_card_orgs: tuple[str, ...] = ()
    token_for_future_use: bool = False
    language: str | None = None
    reference: str | None = None

    endpoint = Endpoint.ORDER_AND_PAY

    def __post_init__(self) -> None:
        check_merchant_no(self.out_trade_no, "outTradeNo")
        _check_len(self.subject, 256, "subject", required=True)
        _check_len(self.user_id, 64, "userId", required=True)
        _check_len(self.front_callback_url, 1024, "frontCallbackUrl", required=True)
        _check_len(self.notify_url, 256, "notifyUrl")
        _check_len(self.reference, 512, "reference")
        _check_len(self.language, 16, "language")
        if self.country is not None and not _COUNTRY.match(self.country):
            raise RequestInvalid("country must be two upper-case letters")
        object.__setattr__(self, "amount", _amount(self.amount, self.currency, "totalAmount"))
        if self.expire_seconds is not None:
            object.__setattr__(self, "expire_seconds", clamp_expire_seconds(self.expire_seconds))

    def to_data(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"paymentMethodType": CARD}
        if self.allowed_card_orgs:
            detail["allowedCardOrg"] = list(self.allowed_card_orgs)
        if self.token_for_future_use:
            detail["tokenForFutureUse"] = True
        data: dict[str, Any] = {
            "outTradeNo": self.out_trade_no,
            "integrate": Integrate.HOSTED_CHECKOUT.value,
            "subject": self.subject,
            "totalAmount": self.amount,
            "currency": self.currency,
            "userId": self.user_id,
            "frontCallbackUrl": self.front_callback_url,
        }
        _put(data, "country", self.country)
        _put(data, "notifyUrl", self.notify_url)
        _put(data, "language", self.language)
        _put(data, "reference", self.reference)
        if self.expire_seconds is not None:
            data["expireTime"] = str(self.expire_seconds)
        data["paymentDetail"] = detail
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPayment:
    """A later payment with a saved card token (Direct_Payment, no card data)."""

    out_trade_no: str
    subject: str
    amount: Decimal
    currency: str
    country: str
    user_id: str
    payment_token_id: str = field(repr=False)
    client_ip: str
    user_agent: str
    terminal_type: str = "WEB"
    notify_url: str | None = None
    front_callback_url: str | None = None
    expire_seconds: int | None = None
    merchant_initiated: bool = False
    reference: str | None = None

    endpoint = Endpoint.ORDER_AND_PAY

    def __post_init__(self) -> None:
        check_merchant_no(self.out_trade_no, "outTradeNo")
        _check_len(self.subject, 256, "subject", required=True)
        _check_len(self.user_id, 64, "userId", required=True)
        _check_len(self.payment_token_id, 64, "paymentTokenID", required=True)
        _check_len(self.client_ip, 64, "buyerInfo.clientIp", required=True)
        _check_len(self.user_agent, 1024, "buyerInfo.userAgent", required=True)
        _check_len(self.notify_url, 256, "notifyUrl")
        _check_len(self.front_callback_url, 1024, "frontCallbackUrl")
        if not _COUNTRY.match(self.country or ""):
            raise RequestInvalid("country is required for a token payment (two upper-case letters)")
        if self.terminal_type not in ("WEB", "WAP", "APP"):
            raise RequestInvalid("terminalType must be WEB, WAP or APP")
        object.__setattr__(self, "amount", _amount(self.amount, self.currency, "totalAmount"))
        if self.expire_seconds is not None:
            object.__setattr__(self, "expire_seconds", clamp_expire_seconds(self.expire_seconds))

    def to_data(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "paymentMethodType": CARD,
            "paymentTokenID": self.payment_token_id,
            "buyerInfo": {"clientIp": self.client_ip, "userAgent": self.user_agent},
        }
        if self.merchant_initiated:
            detail["merchantInitiated"] = True
        data: dict[str, Any] = {
            "outTradeNo": self.out_trade_no,
            "integrate": Integrate.DIRECT_PAYMENT.value,
            "subject": self.subject,
            "totalAmount": self.amount,
            "currency": self.currency,
            "country": self.country,
            "userId": self.user_id,
            "terminalType": self.terminal_type,
        }
        _put(data, "notifyUrl", self.notify_url)
        _put(data, "frontCallbackUrl", self.front_callback_url)
        _put(data, "reference", self.reference)
        if self.expire_seconds is not None:
            data["expireTime"] = str(self.expire_seconds)
        data["paymentDetail"] = detail
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderQuery:
    out_trade_no: str

    endpoint = Endpoint.ORDER_QUERY

    def __post_init__(self) -> None:
        check_merchant_no(self.out_trade_no, "outTradeNo")

    def to_data(self) -> dict[str, Any]:
        return {"outTradeNo": self.out_trade_no}


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund:
    """A full or partial refund of a paid order, keyed by our own ``outRefundNo``."""

    out_refund_no: str
    out_trade_no: str
    amount: Decimal
    currency: str
    comments: str | None = None
    refund_notify_url: str | None = None

    endpoint = Endpoint.REFUND

    def __post_init__(self) -> None:
        check_merchant_no(self.out_refund_no, "outRefundNo")
        check_merchant_no(self.out_trade_no, "outTradeNo")
        _check_len(self.comments, 512, "comments")
        _check_len(self.refund_notify_url, 256, "refundNotifyUrl")
        object.__setattr__(self, "amount", _amount(self.amount, self.currency, "refundAmount"))

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "outRefundNo": self.out_refund_no,
            "refundAmount": self.amount,
            "refundCurrency": self.currency,
            "outTradeNo": self.out_trade_no,
        }
        _put(data, "comments", self.comments)
        _put(data, "refundNotifyUrl", self.refund_notify_url)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundQuery:
    out_refund_no: str

    endpoint = Endpoint.REFUND_QUERY

    def __post_init__(self) -> None:
        check_merchant_no(self.out_refund_no, "outRefundNo")

    def to_data(self) -> dict[str, Any]:
        return {"outRefundNo": self.out_refund_no}


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInquiry:
    user_id: str
    token_scope: str = "tokenAcq"
    payment_token_id: str | None = field(default=None, repr=False)
    payment_method_type: str | None = None
    card_org: str | None = None

    endpoint = Endpoint.INQUIRE_PAYMENT_TOKEN

    def __post_init__(self) -> None:
        _check_len(self.user_id, 64, "userId", required=True)
        _check_len(self.token_scope, 16, "tokenScope", required=True)
        _check_len(self.payment_token_id, 64, "paymentTokenID")

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"userId": self.user_id, "tokenScope": self.token_scope}
        _put(data, "paymentTokenID", self.payment_token_id)
        _put(data, "paymentMethodType", self.payment_method_type)
        _put(data, "cardOrg", self.card_org)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRemoval:
    user_id: str
    payment_token_id: str = field(repr=False)
    reason: str | None = None

    endpoint = Endpoint.REMOVE_PAYMENT_TOKEN

    def __post_init__(self) -> None:
        _check_len(self.user_id, 64, "userId", required=True)
        _check_len(self.payment_token_id, 64, "paymentTokenID", required=True)
        _check_len(self.reason, 256, "removeReason")

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"userId": self.user_id, "paymentTokenID": self.payment_token_id}
        _put(data, "removeReason", self.reason)
        return data
