"""Typed views of what Checus answers: responses' ``data`` (the notifications are in ``notifications``).

The readers are tolerant where the gateway is known to vary (numbers sent as strings,
unknown fields, ``totalAmount`` where ``refundAmount`` is meant) and strict where a wrong
value could move money: a status outside the enum, a missing order number, an amount that
is not a valid amount in its currency all raise ``ReplyInvalid``.

Token ids are charge credentials: every field holding one is excluded from ``repr`` and
values expose only ``token_hint`` (the last four characters) for display and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from worker.gateway.enums import PaymentStatus, RefundStatus, TokenStatus
from worker.gateway.money import AmountError, parse_amount
from worker.gateway.wire import parse_time

E = TypeVar("E", PaymentStatus, RefundStatus, TokenStatus)


class ReplyInvalid(ValueError):
    """A gateway body that does not carry what the protocol promises."""


def token_hint(token_id: str | None) -> str | None:
    return f"…{token_id[-4:]}" if token_id else None


def _obj(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplyInvalid(f"{name} must be an object")
    return value


def text_field(d: dict[str, Any], key: str, *, required: bool = False, limit: int = 1024) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        if required:
            raise ReplyInvalid(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ReplyInvalid(f"{key} must be a string")
    text = str(value)
    if len(text) > limit:
        raise ReplyInvalid(f"{key} is too long")
    return text


def _enum(d: dict[str, Any], key: str, enum: type[E]) -> E:
    value = d.get(key)
    try:
        return enum(str(value))
    except ValueError:
        raise ReplyInvalid(f"{key} is not a known status: {str(value)[:24]!r}") from None


def _money(d: dict[str, Any], keys: tuple[str, ...], currency: str) -> Decimal:
    for key in keys:
        if d.get(key) is not None:
            try:
                return parse_amount(d[key], currency, allow_zero=True)
            except AmountError as exc:
                raise ReplyInvalid(f"{key}: {exc}") from None
    raise ReplyInvalid(f"{keys[0]} is missing")


def _sub(d: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional nested object; anything that is not an object reads as empty."""
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def _currency(d: dict[str, Any], key: str) -> str:
    value = text_field(d, key, required=True, limit=3)
    assert value is not None
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentDetail:
    payment_method_type: str | None
    payment_token_id: str | None = field(repr=False)
    card_org: str | None
    masked_card: str | None
    three_ds_status: str | None

    @property
    def token_hint(self) -> str | None:
        return token_hint(self.payment_token_id)

    @classmethod
    def read(cls, raw: object) -> PaymentDetail:
        d = _obj(raw, "paymentDetails[]")
        card = _sub(d, "cardInfo")
        three_ds = _sub(card, "threeDSResult")
        return cls(
            payment_method_type=text_field(d, "paymentMethodType"),
            payment_token_id=text_field(d, "paymentTokenID", limit=64) or text_field(card, "paymentTokenID", limit=64),
            card_org=text_field(card, "cardOrg"),
            masked_card=text_field(card, "cardIdentifierNo", limit=32),
            three_ds_status=text_field(three_ds, "authenticationStatus"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCreated:
    """The answer to /orderAndPay. ``status`` is a hint: only a notification or a query confirms it."""

    out_trade_no: str
    trade_token: str
    status: PaymentStatus
    redirect_url: str | None

    @classmethod
    def read(cls, raw: object) -> OrderCreated:
        d = _obj(raw, "data")
        return cls(
            out_trade_no=text_field(d, "outTradeNo", required=True, limit=64) or "",
            trade_token=text_field(d, "tradeToken", required=True, limit=64) or "",
            status=_enum(d, "status", PaymentStatus),
            redirect_url=text_field(d, "redirectUrl"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatusReply:
    """An order as /orderQuery or a payment notification describes it."""

    out_trade_no: str
    trade_token: str | None
    amount: Decimal
    currency: str
    country: str | None
    status: PaymentStatus
    result_code: str | None
    result_msg: str | None
    reference: str | None
    complete_time: datetime | None
    payment_details: tuple[PaymentDetail, ...]

    @property
    def payment_token_id(self) -> str | None:
        """The saved-card token a tokenizing payment produced, if any."""
        for detail in self.payment_details:
            if detail.payment_token_id:
                return detail.payment_token_id
        return None

    @classmethod
    def read(cls, raw: object) -> OrderStatusReply:
        d = _obj(raw, "data")
        currency = _currency(d, "currency")
        details = d.get("paymentDetails") or []
        if not isinstance(details, list):
            raise ReplyInvalid("paymentDetails must be a list")
        return cls(
            out_trade_no=text_field(d, "outTradeNo", required=True, limit=64) or "",
            trade_token=text_field(d, "tradeToken", limit=64),
            amount=_money(d, ("totalAmount", "amount"), currency),
            currency=currency,
            country=text_field(d, "country", limit=2),
            status=_enum(d, "status", PaymentStatus),
            result_code=text_field(d, "resultCode"),
            result_msg=text_field(d, "resultMsg"),
            reference=text_field(d, "reference", limit=512),
            complete_time=parse_time(d.get("completeTime")),
            payment_details=tuple(PaymentDetail.read(x) for x in details),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundAccepted:
    """The answer to /refund: REFUND_PENDING, or REFUND_FAILED at once."""

    out_refund_no: str
    refund_trade_no: str | None
    trade_order_no: str | None
    status: RefundStatus

    @classmethod
    def read(cls, raw: object) -> RefundAccepted:
        d = _obj(raw, "data")
        return cls(
            out_refund_no=text_field(d, "outRefundNo", required=True, limit=64) or "",
            refund_trade_no=text_field(d, "refundTradeNo", limit=64),
            trade_order_no=text_field(d, "tradeOrderNo", limit=64),
            status=_enum(d, "status", RefundStatus),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundStatusReply:
    """A refund as /refundQuery or a refund notification describes it."""

    out_refund_no: str
    refund_trade_no: str | None
    out_trade_no: str | None
    amount: Decimal
    currency: str
    status: RefundStatus
    result_msg: str | None
    finish_time: datetime | None

    @classmethod
    def read(cls, raw: object) -> RefundStatusReply:
        d = _obj(raw, "data")
        currency = _currency(d, "refundCurrency") if d.get("refundCurrency") else _currency(d, "currency")
        return cls(
            out_refund_no=text_field(d, "outRefundNo", required=True, limit=64) or "",
            refund_trade_no=text_field(d, "refundTradeNo", limit=64),
            out_trade_no=text_field(d, "outTradeNo", limit=64),
            # WIRE.md §12: the official example says totalAmount where the schema says refundAmount.
            amount=_money(d, ("refundAmount", "totalAmount"), currency),
            currency=currency,
            status=_enum(d, "status", RefundStatus),
            result_msg=text_field(d, "resultMsg"),
            finish_time=parse_time(d.get("refundFinishTime")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentToken:
    payment_token_id: str = field(repr=False)
    user_id: str
    status: TokenStatus
    token_scope: str | None
    payment_method_type: str | None
    brand: str | None
    masked_card: str | None
    expiry: datetime | None

    @property
    def token_hint(self) -> str | None:
        return token_hint(self.payment_token_id)

    @classmethod
    def read(cls, raw: object) -> PaymentToken:
        d = _obj(raw, "tokenList[]")
        card = d.get("cardInfo")
        return cls(
            payment_token_id=text_field(d, "paymentTokenID", required=True, limit=64) or "",
            user_id=text_field(d, "userId", required=True, limit=64) or "",
            status=_enum(d, "paymentTokenStatus", TokenStatus),
            token_scope=text_field(d, "tokenScope"),
            payment_method_type=text_field(d, "paymentMethodType"),
            brand=text_field(d, "brand") or text_field(d, "cardOrg"),
            masked_card=card if isinstance(card, str) and len(card) <= 32 else None,
            expiry=parse_time(d.get("paymentTokenExpiry")),
        )


def read_token_list(raw: object) -> list[PaymentToken]:
    d = _obj(raw if raw is not None else {}, "data")
    items = d.get("tokenList") or []  # PayerMax allows null for "none"
    if not isinstance(items, list):
        raise ReplyInvalid("tokenList must be a list")
    return [PaymentToken.read(x) for x in items]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRemoved:
    user_id: str | None
    payment_token_id: str = field(repr=False)
    status: TokenStatus

    @classmethod
    def read(cls, raw: object) -> TokenRemoved:
        d = _obj(raw, "data")
        return cls(
            user_id=text_field(d, "userId", limit=64),
            payment_token_id=text_field(d, "paymentTokenID", required=True, limit=64) or "",
            status=_enum(d, "paymentTokenStatus", TokenStatus),
        )
