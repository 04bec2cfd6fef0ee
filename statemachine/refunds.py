"""The refund state machine: every rule that moves a refund lives in this file.

Its vocabulary (``RefundState``, ``RefundFacts`` and the events) is in ``refund_inputs``.

Rules, read before the table:

1. States: CREATED (stored, not yet sent, or waiting its turn while another refund of the same
   order is in progress) → REFUND_PENDING → REFUND_SUCCESS | REFUND_FAILED. UNKNOWN means a
   /refund call was sent (or is being sent) and its outcome is not known: a send is claimed
   (CREATED → UNKNOWN) before the call. REFUND_SUCCESS and REFUND_FAILED are terminal.
2. ``decide_refund(refund, event, *, now, refundable_if_applied)`` names a trigger for the input;
   the table picks the first row for that trigger, the refund's state and the fact's source.
3. A report is checked before the table: currency, then amount (exactly equal). A mismatch is an
   anomaly row. A REFUND_SUCCESS that would leave the order's refundable balance negative
   (``refundable_if_applied < 0``) is an anomaly too: the balance is never driven negative.
4. Checus allows one refund in progress per order: a send is claimed only while no other refund
   of the order is REFUND_PENDING or UNKNOWN (``slot_free``; the shell claims the slot with a
   compare-and-set on the order). Codes that mean "not now" (``sending.RETRY_LATER_CODES``) put
   the refund back to CREATED to be sent again later, at most ``MAX_RETRY_LATER`` times; then it
   is given up (REFUND_FAILED and an anomaly: nothing ever happened at the gateway). A refusal
   fails a refund only when the send is known to be the first that could have had an effect
   (``sending`` rule 3); otherwise, and for ORDER_REPEAT and unreadable answers, it is resolved
   by query.
5. Every terminal outcome, and a refund found not in progress, frees the order's refund slot:
   the effect StartNextRefund tells the shell to submit the next waiting refund.
6. A terminal state is never regressed; a contradiction from a notification is confirmed by query
   first, a contradiction confirmed by a query is an anomaly.
7. Not found by /refundQuery (``common.not_found_trigger``): an UNKNOWN refund not found
   ``NOT_FOUND_GRACE`` after its last send goes back to CREATED and is sent again with the same
   outRefundNo; if that send was refused it fails only once still not found ``NOT_FOUND_ALARM``
   after it; a REFUND_PENDING refund not found ``NOT_FOUND_ALARM`` after the last send Checus
   accepted is an anomaly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from .common import (
    AnomalyKind,
    ConfirmByQuery,
    Decision,
    EmitEvent,
    Outcome,
    RecordAnomaly,
    Resubmit,
    Row,
    Source,
    StartNextRefund,
    anomaly_effects,
    money_mismatch,
    not_found_trigger,
    rejection_trigger,
)
from .engine import Table
from .orders import NOT_FOUND_ALARM, NOT_FOUND_GRACE
from .refund_inputs import (
    RefundEvent,
    RefundFacts,
    RefundNotFound,
    RefundReport,
    RefundState,
    RefundSubmitAccepted,
    RefundSubmitClaimed,
    RefundSubmitDuplicate,
    RefundSubmitRejected,
    RefundSubmitUnknown,
    UnfitRefundReport,
)
from .sending import RETRY_LATER_CODES

CREATED, PENDING, UNKNOWN = RefundState.CREATED, RefundState.REFUND_PENDING, RefundState.UNKNOWN
SUCCESS, FAILED = RefundState.REFUND_SUCCESS, RefundState.REFUND_FAILED
_ALL = tuple(RefundState)
_OPEN = (CREATED, UNKNOWN, PENDING)
_DONE = (SUCCESS, FAILED)
_SENT = (UNKNOWN, PENDING, *_DONE)  # every state past CREATED
APPLIED, NOOP, DUPLICATE = Outcome.APPLIED, Outcome.NOOP, Outcome.DUPLICATE
ANOMALY, CONFIRM, REJECTED = Outcome.ANOMALY, Outcome.CONFIRM, Outcome.REJECTED
NOTIFIED = Source.NOTIFICATION
_QUERY = (ConfirmByQuery(),)
_SUCCEEDED = (EmitEvent(type="refund.succeeded"), StartNextRefund())
_FAILED = (EmitEvent(type="refund.failed"), StartNextRefund())
_GIVEN_UP = (
    RecordAnomaly(kind=AnomalyKind.REFUND_RETRY_EXHAUSTED, detail="Checus kept answering \"not now\""),
    EmitEvent(type="anomaly.detected"),
    *_FAILED,
)
CURRENCY_MISMATCH, AMOUNT_MISMATCH = AnomalyKind.CURRENCY_MISMATCH, AnomalyKind.AMOUNT_MISMATCH
OVER_PAID, CONTRADICTED = AnomalyKind.REFUND_OVER_PAID, AnomalyKind.REFUND_CONTRADICTED
UNKNOWN_REFUND, NOT_FOUND = AnomalyKind.UNKNOWN_REFUND, AnomalyKind.NOT_FOUND_AT_GATEWAY

# fmt: off
REFUND_TRANSITIONS: Final[tuple[Row[RefundState], ...]] = (
    #   trigger                     sources             dest     outcome    effects, via=, anomaly=
    # -- a report that does not match the refund (checked first, in this order)
    Row("report_currency_mismatch", _ALL,               None,    ANOMALY,   anomaly=CURRENCY_MISMATCH),
    Row("report_amount_mismatch",   _ALL,               None,    ANOMALY,   anomaly=AMOUNT_MISMATCH),
    # -- claiming the send: a CREATED refund, and only while the order's refund slot is free
    Row("send_claimed",             (CREATED,),         UNKNOWN, APPLIED),
    Row("send_claimed",             _SENT,              None,    REJECTED),
    Row("send_waits_turn",          (CREATED,),         None,    NOOP),
    Row("send_waits_turn",          _SENT,              None,    REJECTED),
    # -- answers to /refund (a late answer may find the refund CREATED again, or moved on)
    Row("submit_pending",           (CREATED, UNKNOWN), PENDING, APPLIED),
    Row("submit_pending",           (PENDING,),         None,    DUPLICATE),
    Row("submit_pending",           _DONE,              None,    NOOP),
    Row("submit_failed",            (CREATED, UNKNOWN), FAILED,  APPLIED,   _FAILED),
    Row("submit_failed",            (FAILED,),          None,    DUPLICATE),
    Row("submit_failed",            (PENDING, SUCCESS), None,    NOOP),
    Row("submit_rejected_wait",     (UNKNOWN,),         CREATED, APPLIED),
    Row("submit_rejected_wait",     (CREATED, PENDING, *_DONE), None, NOOP),
    Row("submit_wait_exhausted",    (UNKNOWN,),         FAILED,  APPLIED,   _GIVEN_UP),
    Row("submit_wait_exhausted",    (CREATED, PENDING, *_DONE), None, NOOP),
    Row("submit_rejected",          (UNKNOWN,),         FAILED,  APPLIED,   _FAILED),
    Row("submit_rejected",          (FAILED,),          None,    DUPLICATE),
    Row("submit_rejected",          (CREATED, PENDING, SUCCESS), None, NOOP),
    Row("submit_rejected_resend",   (UNKNOWN,),         None,    CONFIRM,   _QUERY),
    Row("submit_rejected_resend",   (CREATED, PENDING, *_DONE), None, NOOP),
    Row("submit_unknown",           (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_unknown",           (UNKNOWN,),         None,    CONFIRM,   _QUERY),
    Row("submit_unknown",           (PENDING, *_DONE),  None,    NOOP),
    Row("submit_duplicate",         (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_duplicate",         (UNKNOWN,),         None,    CONFIRM,   _QUERY),
    Row("submit_duplicate",         (PENDING, *_DONE),  None,    NOOP),
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
    # -- /refundQuery found no such refund (rule 7 says which trigger)
    Row("not_found_overdue",        (UNKNOWN,),         CREATED, APPLIED,   (Resubmit(), StartNextRefund())),
    Row("not_found_after_refusal",  (UNKNOWN,),         FAILED,  APPLIED,   _FAILED),
    Row("not_found_alarm",          (UNKNOWN, PENDING), None,    ANOMALY,   anomaly=NOT_FOUND),
    Row("not_found",                _ALL,               None,    NOOP),
)
# fmt: on

_TABLE: Final = Table("refunds", RefundState, REFUND_TRANSITIONS)
REFUND_TERMINAL: Final[frozenset[RefundState]] = frozenset(_DONE)
REFUND_IN_PROGRESS: Final[frozenset[RefundState]] = frozenset({UNKNOWN, PENDING})
LEGAL_REFUND_EDGES: Final[frozenset[tuple[RefundState, RefundState]]] = _TABLE.edges


def is_terminal_refund(state: RefundState) -> bool:
    """True for REFUND_SUCCESS and REFUND_FAILED: states a report can never leave."""
    return state in REFUND_TERMINAL






















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


def _submit_trigger(refund: RefundFacts, event: RefundSubmitClaimed | RefundSubmitAccepted | RefundSubmitRejected
                    ) -> str:
    """The trigger for a claim or a synchronous /refund answer."""
    if isinstance(event, RefundSubmitClaimed):
        return "send_claimed" if event.slot_free else "send_waits_turn"
    if isinstance(event, RefundSubmitAccepted):
        return f"submit_{event.status.removeprefix('REFUND_').lower()}"
    return rejection_trigger(refund, event.code, event.send_no, retry_later=RETRY_LATER_CODES)


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
    if isinstance(event, RefundSubmitClaimed | RefundSubmitAccepted | RefundSubmitRejected):
        return _submit_trigger(refund, event)
    if isinstance(event, RefundNotFound):
        return not_found_trigger(refund, UNKNOWN, PENDING, now, limits)
    return _FIXED_TRIGGERS[type(event)]


def _source(event: RefundEvent) -> Source:
    """Where the input came from."""
    if isinstance(event, UnfitRefundReport):
        return event.report.source
    if isinstance(event, RefundNotFound):
        return Source.POLL
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
