"""The simulator's truth: orders, refunds, tokens and notification attempts as frozen records.

Records never change in place. A transition builds a new record (``dataclasses.replace``) and
the state swaps it in under its lock, so a reader on another thread always sees a whole
record, never a half-written one. The vocabularies are spelled as on the wire (WIRE.md §6)
and defined here again on purpose: the simulator does not share code with the client it is
meant to test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


class RefundStatus(StrEnum):
    REFUND_PENDING = "REFUND_PENDING"
    REFUND_SUCCESS = "REFUND_SUCCESS"
    REFUND_FAILED = "REFUND_FAILED"


class TokenStatus(StrEnum):
    ACTIVATED = "Activated"
    EXPIRED = "Expired"
    DELETED = "Deleted"


HOSTED = "Hosted_Checkout"
DIRECT = "Direct_Payment"


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """The simulated card behind a payment or a token; the PAN is only ever kept masked."""

    org: str
    country: str
    masked: str
    holder_masked: str
    expiry_month: str
    expiry_year: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    out_trade_no: str
    trade_token: str
    trade_order_no: str
    integrate: str
    subject: str
    amount: Decimal
    currency: str
    country: str | None
    user_id: str
    reference: str | None = None
    notify_url: str | None = None
    front_callback_url: str | None = None
    payment_method_type: str | None = None
    target_org: str | None = None
    token_offered: bool = False
    token_used: str | None = None
    card: Card | None = None
    needs_3ds: bool = False
    status: OrderStatus = OrderStatus.PENDING
    created_at: datetime
    expire_at: datetime
    completed_at: datetime | None = None
    result_code: str | None = None
    result_msg: str = ""
    three_ds_ran: bool = False
    token_minted: str | None = None
    fingerprint: str = ""
    first_reply: Mapping[str, Any] = field(default_factory=dict)

    @property
    def payment_token_id(self) -> str | None:
        """The token this payment used or created, as the gateway reports it."""
        return self.token_minted or self.token_used

    @property
    def terminal(self) -> bool:
        return self.status is not OrderStatus.PENDING


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund:
    out_refund_no: str
    refund_trade_no: str
    trade_order_no: str
    out_trade_no: str
    amount: Decimal
    currency: str
    comments: str | None = None
    notify_url: str | None = None
    status: RefundStatus = RefundStatus.REFUND_PENDING
    created_at: datetime
    finished_at: datetime | None = None
    result_msg: str = ""

    @property
    def terminal(self) -> bool:
        return self.status is not RefundStatus.REFUND_PENDING


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    token_id: str
    user_id: str
    card: Card
    expiry: datetime
    created_at: datetime
    out_trade_no: str
    status: TokenStatus = TokenStatus.ACTIVATED

    def status_at(self, now: datetime) -> TokenStatus:
        """Stored status, except that an Activated token past its expiry reads as Expired."""
        if self.status is TokenStatus.ACTIVATED and now >= self.expiry:
            return TokenStatus.EXPIRED
        return self.status


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationAttempt:
    """One POST of a notification. ``source`` is ladder, duplicate or resend."""

    id: int
    notification_id: int
    kind: str
    key: str
    attempt: int
    source: str
    url: str
    sent_at: datetime
    http_status: int | None
    error: str | None
    acked: bool
    body_sha256: str
    signature_valid: bool
