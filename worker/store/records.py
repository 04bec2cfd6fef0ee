"""Typed views of stored rows. Amounts leave the store as ``Decimal`` in major units."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from statemachine import Answer, SendLedger
from worker.gateway.money import from_minor


def _ledger(m: dict[str, Any]) -> SendLedger:
    """The send ledger columns of a row, as the core's value (removed from ``m``)."""
    answer = m.pop("last_answer")
    return SendLedger(sends=m.pop("sends"), clean=m.pop("clean_sends"),
                      last_answer=Answer(answer) if answer else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRecord:
    id: int
    out_trade_no: str
    kind: str
    state: str
    version: int
    amount: Decimal
    currency: str
    country: str | None
    user_id: str
    subject: str
    tokenize: bool
    token_ref: int | None
    app_id: str
    merchant_no: str
    trade_token: str | None
    redirect_url: str | None
    submit_hint: str | None
    request_json: str = field(repr=False)
    refund_seq: int
    created_at: datetime
    updated_at: datetime
    last_submit_at: datetime | None
    expire_at: datetime | None
    next_poll_at: datetime | None
    poll_count: int
    accepted_at: datetime | None
    ledger: SendLedger

    @classmethod
    def from_row(cls, row: Any) -> OrderRecord:
        m = dict(row._mapping)
        m.pop("out_trade_no_key", None)
        m["amount"] = from_minor(m.pop("amount_minor"), m["currency"])
        ledger = _ledger(m)
        return cls(**m, ledger=ledger)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRecord:
    id: int
    out_refund_no: str
    order_id: int
    state: str
    version: int
    amount: Decimal
    currency: str
    comments: str | None
    refund_trade_no: str | None
    created_at: datetime
    updated_at: datetime
    last_submit_at: datetime | None
    next_poll_at: datetime | None
    poll_count: int
    accepted_at: datetime | None
    ledger: SendLedger

    @classmethod
    def from_row(cls, row: Any) -> RefundRecord:
        m = dict(row._mapping)
        m["amount"] = from_minor(m.pop("amount_minor"), m["currency"])
        ledger = _ledger(m)
        return cls(**m, ledger=ledger)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    id: int
    user_id: str
    token_id: str = field(repr=False)
    token_hint: str
    status: str
    card_org: str | None
    masked_card: str | None
    expiry: datetime | None
    source_order_id: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> TokenRecord:
        return cls(**dict(row._mapping))


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionRecord:
    entity: str
    entity_id: int
    version: int
    from_state: str | None
    to_state: str
    trigger: str
    source: str
    evidence: str
    at: datetime

    @classmethod
    def from_row(cls, row: Any) -> TransitionRecord:
        m = dict(row._mapping)
        m.pop("id", None)
        return cls(**m)
