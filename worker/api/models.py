"""The API's request and response models (pydantic v2): they validate requests and are the OpenAPI document.

Why pydantic through FastAPI: one model is both the check of a request and its schema in the
OpenAPI 3.1 document, so the document cannot drift from what the server accepts; both are
well kept and typed. Amounts are decimal strings with the currency's exponent (``"12.50"``
USD, ``"15000"`` IDR), checked with ``gateway.money`` like every other amount, never floats.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from worker.gateway.money import GATEWAY_EXPONENTS, AmountError, currency_exponent, parse_amount


def known_currencies() -> list[str]:
    """The codes ``gateway.money`` accepts (ISO 4217 through Babel, and the gateway's own list)."""
    from babel.numbers import list_currencies

    return sorted(c for c in {*list_currencies(), *GATEWAY_EXPONENTS} if len(c) == 3 and c.isupper() and c.isalpha())

MerchantNo = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$",
                                  description="1-64 letters, digits or underscores; unique, case-insensitive")]
AmountText = Annotated[str, Field(pattern=r"^[0-9]{1,15}(\.[0-9]{1,4})?$", examples=["12.50"],
                                  description="Decimal string in major units with at most the currency's decimals")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"], description="ISO 4217 code",
                                json_schema_extra={"enum": known_currencies()})]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", examples=["US"])]
UserId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaymentCreate(_Strict):
    """A hosted card payment (send the buyer to ``redirect_url``), or with ``card_id`` a saved-card payment."""

    out_trade_no: MerchantNo
    currency: Currency
    amount: AmountText
    user_id: UserId
    subject: str = Field(min_length=1, max_length=256)
    return_url: str | None = Field(None, max_length=1024, pattern=r"^https?://\S+$",
                                   description="Where Checus sends the buyer back; required for a hosted payment")
    save_card: bool = Field(False, description="Offer to save the card for later payments (hosted only)")
    country: Country | None = None
    card_id: int | None = Field(None, ge=1, le=2**31 - 1,
                                description="A saved card of this user (GET /v1/users/{user_id}/cards)")
    client_ip: str | None = Field(None, max_length=64, description="The buyer's IP (required with card_id)")
    user_agent: str | None = Field(None, max_length=256, description="The buyer's browser (required with card_id)")
    reference: str | None = Field(None, max_length=64)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        try:
            currency_exponent(value)
        except AmountError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str, info: ValidationInfo) -> str:
        currency = info.data.get("currency")
        if currency is None:
            return value
        try:
            return str(parse_amount(value, currency))
        except AmountError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _method(self) -> PaymentCreate:
        if self.card_id is None and self.return_url is None:
            raise ValueError("return_url is required for a hosted payment")
        if self.card_id is not None:
            missing = [n for n in ("client_ip", "user_agent", "country") if not getattr(self, n)]
            if missing:
                raise ValueError(f"a saved-card payment needs {', '.join(missing)}")
            if self.save_card:
                raise ValueError("save_card applies to hosted payments only")
        return self


class RefundCreate(_Strict):
    """A (partial) refund; without an Idempotency-Key, ``out_refund_no`` is required (it makes a repeat safe)."""

    amount: AmountText
    out_refund_no: MerchantNo | None = None
    comments: str | None = Field(None, max_length=256)


class Transition(BaseModel):
    version: int
    at: datetime
    from_state: str | None
    to_state: str
    trigger: str
    source: str


class Refund(BaseModel):
    out_refund_no: str
    out_trade_no: str
    state: str
    amount: AmountText
    currency: Currency
    comments: str | None
    refund_trade_no: str | None
    created_at: datetime
    updated_at: datetime
    history: list[Transition]


class Payment(BaseModel):
    out_trade_no: str
    kind: str = Field(description="hosted | token")
    state: str = Field(description="Our state: CREATED, PENDING, UNKNOWN (being resolved), SUCCESS, FAILED, CLOSED…")
    amount: AmountText
    currency: Currency
    refunded: AmountText
    country: str | None
    user_id: str
    subject: str
    save_card: bool
    card_id: int | None
    redirect_url: str | None = Field(description="Send the buyer here (cashier or 3-D Secure)")
    gateway_hint: str | None = Field(description="What Checus first answered; a hint until confirmed")
    created_at: datetime
    updated_at: datetime
    expire_at: datetime | None
    history: list[Transition]
    refunds: list[Refund]


class PaymentCreated(Payment):
    refusal_code: str | None = Field(None, description="Checus's code when it refused the payment (state FAILED)")
    detail: str | None = Field(None, description="Set when the outcome is being resolved (HTTP 202)")


class Card(BaseModel):
    card_id: int
    status: str = Field(description="Activated, Removing (blocked until the next sync), Deleted, Expired …")
    card_org: str | None
    masked_card: str | None
    token_hint: str
    expiry: datetime | None
    created_at: datetime
    updated_at: datetime


class CardList(BaseModel):
    user_id: str
    synced: bool = Field(description="False when Checus could not be asked: the cards as last known")
    cards: list[Card]


class CardRemoval(Card):
    detail: str | None = Field(None, description="Set when the removal is being resolved (HTTP 202)")


class Event(BaseModel):
    cursor: str = Field(description="Pass as ?after= to read the events after this one")
    event_id: str = Field(description="The same id as the webhook's; de-duplicate by it")
    type: str
    created_at: datetime
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Event]
    next_cursor: str | None = Field(description="The cursor to read on from (null when nothing was read)")
    has_more: bool


class FieldError(BaseModel):
    pointer: str = Field(description="JSON pointer or parameter the error is about, e.g. /amount or query/after")
    message: str
    code: str


class Problem(BaseModel):
    """RFC 9457 problem details; ``type`` is stable per kind of error."""

    type: str
    title: str
    status: int
    detail: str
    reason: str | None = None
    field: str | None = None
    ref: str | None = None
    code: str | None = None
    refundable: str | None = None
    errors: list[FieldError] | None = None


def amount_text(amount: Decimal) -> str:
    return str(amount)
