"""The refund state machine: every rule that moves a refund lives in this file.

Rules, read before the table:

1. States: CREATED (stored, not yet sent, or waiting its turn while another refund of the same
   order is in progress) → REFUND_PENDING → REFUND_SUCCESS | REFUND_FAILED. UNKNOWN means the
   /refund call's outcome is unknown. REFUND_SUCCESS and REFUND_FAILED are terminal.
2. ``decide_refund(refund, event, *, now, refundable_if_applied)`` names a trigger for the input;
   the table picks the first row for that trigger, the refund's state and the fact's source.
3. A report is checked before the table: currency, then amount (exactly equal). A mismatch is an
   anomaly row. A REFUND_SUCCESS that would leave the order's refundable balance negative
   (``refundable_if_applied < 0``) is an anomaly too: the balance is never driven negative.
4. Checus allows one refund in progress per order. Codes that mean "not now" (insufficient
   balance; REFUND_FAILED as the *response code*, which the gateway uses for "a refund is already
   in progress") keep the refund CREATED: the shell retries later. Other rejections fail it.
5. Every terminal outcome, and a refund found not in progress, frees the order's refund slot:
   the effect StartNextRefund tells the shell to submit the next waiting refund.
6. A terminal state is never regressed; a contradiction from a notification is confirmed by query
   first, a contradiction confirmed by a query is an anomaly.
7. Not found by /refundQuery: an UNKNOWN refund not found ``NOT_FOUND_GRACE`` after its last
   submit goes back to CREATED and is resubmitted with the same outRefundNo; a REFUND_PENDING
   refund not found ``NOT_FOUND_ALARM`` after creation is an anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final, TypeAlias

from .common import (
    AnomalyKind,
    ConfirmByQuery,
    Decision,
    EmitEvent,
    Outcome,
    Resubmit,
    Row,
    Source,
    StartNextRefund,
    anomaly_effects,
    check_report,
    money_mismatch,
    not_found_trigger,
    rejection_trigger,
    require_decimal,
)
from .engine import Table
from .orders import NOT_FOUND_ALARM, NOT_FOUND_GRACE


class RefundState(StrEnum):
    """Local state of one refund; values are the gateway's words where they exist."""

    CREATED = "CREATED"
    REFUND_PENDING = "REFUND_PENDING"
    UNKNOWN = "UNKNOWN"
    REFUND_SUCCESS = "REFUND_SUCCESS"
    REFUND_FAILED = "REFUND_FAILED"


CREATED, PENDING, UNKNOWN = RefundState.CREATED, RefundState.REFUND_PENDING, RefundState.UNKNOWN
SUCCESS, FAILED = RefundState.REFUND_SUCCESS, RefundState.REFUND_FAILED
_ALL = tuple(RefundState)
_OPEN = (CREATED, UNKNOWN, PENDING)
_DONE = (SUCCESS, FAILED)
_SENT = (UNKNOWN, PENDING, *_DONE)  # every state past CREATED
APPLIED, NOOP, DUPLICATE = Outcome.APPLIED, Outcome.NOOP, Outcome.DUPLICATE
ANOMALY, CONFIRM = Outcome.ANOMALY, Outcome.CONFIRM
NOTIFIED = Source.NOTIFICATION
_QUERY = (ConfirmByQuery(),)
_SUCCEEDED = (EmitEvent(type="refund.succeeded"), StartNextRefund())
_FAILED = (EmitEvent(type="refund.failed"), StartNextRefund())
CURRENCY_MISMATCH, AMOUNT_MISMATCH = AnomalyKind.CURRENCY_MISMATCH, AnomalyKind.AMOUNT_MISMATCH
OVER_PAID, CONTRADICTED = AnomalyKind.REFUND_OVER_PAID, AnomalyKind.REFUND_CONTRADICTED
UNKNOWN_REFUND, NOT_FOUND = AnomalyKind.UNKNOWN_REFUND, AnomalyKind.NOT_FOUND_AT_GATEWAY

# Refund rejections that mean "not now": the refund stays CREATED and the shell retries later.
RETRY_LATER_CODES: Final = frozenset({"REFUND_INSUFFICIENT_BALANCE", "REFUND_FAILED"})

# fmt: off
REFUND_TRANSITIONS: Final[tuple[Row[RefundState], ...]] = (
    #   trigger                     sources             dest     outcome    effects, via=, anomaly=
    # -- a report that does not match the refund (checked first, in this order)
    Row("report_currency_mismatch", _ALL,               None,    ANOMALY,   anomaly=CURRENCY_MISMATCH),
    Row("report_amount_mismatch",   _ALL,               None,    ANOMALY,   anomaly=AMOUNT_MISMATCH),
    # -- answers to /refund
    Row("submit_pending",           (CREATED, UNKNOWN), PENDING, APPLIED),
    Row("submit_pending",           (PENDING,),         None,    DUPLICATE),
    Row("submit_pending",           _DONE,              None,    NOOP),
    Row("submit_failed",            (CREATED, UNKNOWN), FAILED,  APPLIED,   _FAILED),
    Row("submit_failed",            (FAILED,),          None,    DUPLICATE),
    Row("submit_failed",            (PENDING, SUCCESS), None,    NOOP),
    Row("submit_rejected_wait",     _ALL,               None,    NOOP),
    Row("submit_rejected",          (CREATED, UNKNOWN), FAILED,  APPLIED,   _FAILED),
    Row("submit_rejected",          (FAILED,),          None,    DUPLICATE),
    Row("submit_rejected",          (PENDING, SUCCESS), None,    NOOP),
    Row("submit_unknown",           (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_unknown",           _SENT,              None,    NOOP),
    Row("submit_duplicate",         (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_duplicate",         _SENT,              None,    NOOP),
    # -- verified notifications and queries
    Row("report_pending",           (CREATED, UNKNOWN), PENDING, APPLIED),
    Row("report_pending",           (PENDING, *_DONE),  None,    NOOP),
    Row("report_success_over_paid", _OPEN,              None,    ANOMALY,   anomaly=OVER_PAID),
    Row("report_success",           _OPEN,              SUCCESS, APPLIED,   _SUCCEEDED),
    Row("report_success",           (SUCCESS,),         None,    DUPLICATE),
    Row("report_success",           (FAILED,),          None,    CONFIRM,   _QUERY, via=NOTIFIED),
    Row("report_success",           (FAILED,),          None,    ANOMALY,   anomaly=CONTRADICTED),
    Row("report_failed",            _OPEN,              FAILED,  APPLIED,   _FAILED),
    Row("report_failed",            (FAILED,),          None,    DUPLICATE),
    Row("report_failed",            (SUCCESS,),         None,    CONFIRM,   _QUERY, via=NOTIFIED),
    Row("report_failed",            (SUCCESS,),         None,    ANOMALY,   anomaly=CONTRADICTED),
    # -- a report for an outRefundNo we do not know that does not fit its order (money.py decides)
    Row("report_unfit",             _ALL,               None,    ANOMALY,   anomaly=UNKNOWN_REFUND),
    # -- /refundQuery found no such refund; overdue = past the grace (UNKNOWN) or the alarm (PENDING)
    Row("not_found_overdue",        (UNKNOWN,),         CREATED, APPLIED,   (Resubmit(), StartNextRefund())),
    Row("not_found_overdue",        (PENDING,),         None,    ANOMALY,   anomaly=NOT_FOUND),
    Row("not_found",                _ALL,               None,    NOOP),
)
# fmt: on

_TABLE: Final = Table("refunds", RefundState, REFUND_TRANSITIONS)
LEGAL_REFUND_EDGES: Final[frozenset[tuple[RefundState, RefundState]]] = _TABLE.edges
_REPORT_STATUSES: Final = frozenset({"REFUND_PENDING", "REFUND_SUCCESS", "REFUND_FAILED"})


def is_terminal_refund(state: RefundState) -> bool:
    """True for REFUND_SUCCESS and REFUND_FAILED: states a report can never leave."""
    return state in (SUCCESS, FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundFacts:
    """What the shell knows about the refund when the input arrives."""

    state: RefundState
    amount: Decimal
    currency: str
    out_trade_no: str
    created_at: datetime
    last_submit_at: datetime | None = None

    def __post_init__(self) -> None:
        require_decimal("amount", self.amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitAccepted:
    """/refund answered APPLY_SUCCESS with ``status`` REFUND_PENDING or REFUND_FAILED."""

    status: str = "REFUND_PENDING"

    def __post_init__(self) -> None:
        if self.status not in ("REFUND_PENDING", "REFUND_FAILED"):
            raise ValueError(f"a /refund answer is REFUND_PENDING or REFUND_FAILED, not {self.status!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitRejected:
    """/refund refused the request with ``code``."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitUnknown:
    """The /refund call's outcome is unknown (timeout, connection lost, unreadable answer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSubmitDuplicate:
    """/refund answered ORDER_REPEAT: the outRefundNo is already known with different data."""


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


RefundEvent: TypeAlias = (
    RefundSubmitAccepted
    | RefundSubmitRejected
    | RefundSubmitUnknown
    | RefundSubmitDuplicate
    | RefundReport
    | RefundNotFound
    | UnfitRefundReport
)


def _report_trigger(refund: RefundFacts, report: RefundReport, refundable_if_applied: Decimal | None) -> str:
    """The trigger for a report: mismatches first, then the over-paid guard, then the status."""
    if mismatch := money_mismatch(refund, report):
        return mismatch
    if (
        report.status == "REFUND_SUCCESS"
        and refundable_if_applied is not None
        and refundable_if_applied < 0
        and not is_terminal_refund(refund.state)
    ):
        return "report_success_over_paid"
    return f"report_{report.status.removeprefix('REFUND_').lower()}"


def _submit_trigger(event: RefundSubmitAccepted | RefundSubmitRejected) -> str:
    """The trigger for a synchronous /refund answer."""
    if isinstance(event, RefundSubmitAccepted):
        return f"submit_{event.status.removeprefix('REFUND_').lower()}"
    return rejection_trigger(event.code, RETRY_LATER_CODES)


_FIXED_TRIGGERS: Final[dict[type, str]] = {
    RefundSubmitUnknown: "submit_unknown",
    RefundSubmitDuplicate: "submit_duplicate",
    UnfitRefundReport: "report_unfit",
}


def _trigger(
    refund: RefundFacts,
    event: RefundEvent,
    now: datetime,
    refundable_if_applied: Decimal | None,
    limits: tuple[timedelta, timedelta],
) -> str:
    """The table trigger for ``event`` given the refund (the guards live here)."""
    if isinstance(event, RefundReport):
        return _report_trigger(refund, event, refundable_if_applied)
    if isinstance(event, RefundSubmitAccepted | RefundSubmitRejected):
        return _submit_trigger(event)
    if isinstance(event, RefundNotFound):
        return not_found_trigger(refund, UNKNOWN, PENDING, now, limits)
    return _FIXED_TRIGGERS[type(event)]


def _source(event: RefundEvent) -> Source:
    """Where the input came from."""
    if isinstance(event, UnfitRefundReport):
        return event.report.source
    return event.source if isinstance(event, RefundReport) else Source.API


def decide_refund(
    refund: RefundFacts,
    event: RefundEvent,
    *,
    now: datetime,
    refundable_if_applied: Decimal | None,
    grace: timedelta = NOT_FOUND_GRACE,
    alarm: timedelta = NOT_FOUND_ALARM,
) -> Decision[RefundState]:
    """Decide what ``event`` does to ``refund``; a success must come with the balance it would leave."""
    trigger = _trigger(refund, event, now, refundable_if_applied, (grace, alarm))
    source = _source(event)
    reason = event.reason if isinstance(event, UnfitRefundReport) else None
    return _TABLE.decide(refund.state, trigger, source, lambda row: anomaly_effects(row, refund.state, source, reason))
