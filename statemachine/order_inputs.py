"""The inputs of the payment-order state machine: its states, what the shell knows about an order
(``OrderFacts``) and every event ``orders.decide`` accepts.

The rules that move an order, and the table, are in ``orders``; these values only check that
they are well formed (a Decimal amount, a status a report can carry, a reason for an operator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final, TypeAlias

from .common import (
    Source,
    check_report,
    require_decimal,
)
from .sending import Answer, SendLedger, classify


class OrderState(StrEnum):
    """Local state of a payment order; values are the gateway's words where they exist."""

    CREATED = "CREATED"
    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


_REPORT_STATUSES: Final = frozenset({"PENDING", "SUCCESS", "FAILED", "CLOSED"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFacts:
    """What the shell knows about the order when the input arrives."""

    state: OrderState
    amount: Decimal
    currency: str
    app_id: str
    merchant_no: str
    user_id: str
    tokenize: bool
    created_at: datetime
    last_submit_at: datetime | None = None
    accepted_at: datetime | None = None  # when Checus last accepted a send (APPLY_SUCCESS or ORDER_REPEAT)
    ledger: SendLedger = field(default_factory=SendLedger)

    def __post_init__(self) -> None:
        require_decimal("amount", self.amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitClaimed:
    """The shell asks to send the create request: only a CREATED order may be sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitAccepted:
    """/orderAndPay answered APPLY_SUCCESS with ``status_hint`` PENDING or SUCCESS."""

    status_hint: str = "PENDING"

    def __post_init__(self) -> None:
        if self.status_hint not in ("PENDING", "SUCCESS"):
            raise ValueError(f"status_hint must be PENDING or SUCCESS, got {self.status_hint!r}")

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return Answer.ACCEPTED


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRejected:
    """/orderAndPay answered send number ``send_no`` with the refusal ``code``."""

    code: str
    send_no: int

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return classify(self.code)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitUnknown:
    """The /orderAndPay call's outcome is unknown (timeout, connection lost, unreadable answer)."""

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return Answer.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitDuplicate:
    """/orderAndPay answered ORDER_REPEAT: the outTradeNo is already known to the gateway."""

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return Answer.REPEAT


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayReport:
    """A verified notification or an /orderQuery answer about the order."""

    status: str
    amount: Decimal
    currency: str
    source: Source
    app_id: str | None = None
    merchant_no: str | None = None
    has_token: bool = False

    def __post_init__(self) -> None:
        check_report(
            self.amount,
            self.status,
            self.source,
            statuses=_REPORT_STATUSES,
            status_of="order",
            called="gateway report",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayNotFound:
    """/orderQuery answered ORDER_NOT_EXIST."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorResolve:
    """An operator asks to move the order to ``to_state``, giving a reason for the audit trail."""

    to_state: OrderState
    reason: str
    has_token: bool = False  # the fresh query that confirmed it carries a saved-card token

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("an operator decision needs a reason")


SendAnswer: TypeAlias = SubmitAccepted | SubmitRejected | SubmitUnknown | SubmitDuplicate


OrderEvent: TypeAlias = (
    SubmitClaimed
    | SubmitAccepted
    | SubmitRejected
    | SubmitUnknown
    | SubmitDuplicate
    | GatewayReport
    | GatewayNotFound
    | OperatorResolve
)
