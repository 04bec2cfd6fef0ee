"""The inputs of the refund state machine: its states, what the shell knows about a refund
(``RefundFacts``) and every event ``refunds.decide_refund`` accepts.

The rules that move a refund, and the table, are in ``refunds``; these values only check that
they are well formed (a Decimal amount, a status a report can carry).
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
from .sending import RETRY_LATER_CODES, Answer, SendLedger, classify


class RefundState(StrEnum):
    """Local state of one refund; values are the gateway's words where they exist."""

    CREATED = "CREATED"
    REFUND_PENDING = "REFUND_PENDING"
    UNKNOWN = "UNKNOWN"
    REFUND_SUCCESS = "REFUND_SUCCESS"
    REFUND_FAILED = "REFUND_FAILED"


_REPORT_STATUSES: Final = frozenset({"REFUND_PENDING", "REFUND_SUCCESS", "REFUND_FAILED"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundFacts:
    """What the shell knows about the refund when the input arrives."""

    state: RefundState
    amount: Decimal
    currency: str
    out_trade_no: str
    created_at: datetime
    last_submit_at: datetime | None = None
    accepted_at: datetime | None = None  # when Checus last accepted a send (APPLY_SUCCESS or ORDER_REPEAT)
    ledger: SendLedger = field(default_factory=SendLedger)

    def __post_init__(self) -> None:
        require_decimal("amount", self.amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitClaimed:
    """The shell asks to send the refund; ``slot_free``: no other refund of the order is in progress."""

    slot_free: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitAccepted:
    """/refund answered APPLY_SUCCESS with ``status`` REFUND_PENDING or REFUND_FAILED."""

    status: str = "REFUND_PENDING"

    def __post_init__(self) -> None:
        if self.status not in ("REFUND_PENDING", "REFUND_FAILED"):
            raise ValueError(f"a /refund answer is REFUND_PENDING or REFUND_FAILED, not {self.status!r}")

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return Answer.ACCEPTED


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitRejected:
    """/refund answered send number ``send_no`` with the refusal ``code``."""

    code: str
    send_no: int

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return classify(self.code, retry_later=RETRY_LATER_CODES)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitUnknown:
    """The /refund call's outcome is unknown (timeout, connection lost, unreadable answer)."""

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return Answer.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitDuplicate:
    """/refund answered ORDER_REPEAT: the outRefundNo is already known with different data."""

    @property
    def answer(self) -> Answer:
        """How this answer reads in the send ledger."""
        return Answer.REPEAT


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundReport:
    """A verified refund notification or a /refundQuery answer."""

    status: str
    amount: Decimal
    currency: str
    source: Source

    def __post_init__(self) -> None:
        check_report(
            self.amount,
            self.status,
            self.source,
            statuses=_REPORT_STATUSES,
            status_of="refund",
            called="refund report",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundNotFound:
    """/refundQuery said the gateway has no such refund."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnfitRefundReport:
    """A report for an outRefundNo we do not know that does not fit its order (``reason`` says why)."""

    report: RefundReport
    reason: str


RefundSendAnswer: TypeAlias = RefundSubmitAccepted | RefundSubmitRejected | RefundSubmitUnknown | RefundSubmitDuplicate


RefundEvent: TypeAlias = (
    RefundSubmitClaimed
    | RefundSubmitAccepted
    | RefundSubmitRejected
    | RefundSubmitUnknown
    | RefundSubmitDuplicate
    | RefundReport
    | RefundNotFound
    | UnfitRefundReport
)
