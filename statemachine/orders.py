"""The payment-order state machine: every rule that moves an order lives in this file.

Rules, read before the table:

1. States: CREATED (stored, not yet sent) → PENDING (accepted by Checus) → SUCCESS | FAILED |
   CLOSED. UNKNOWN means the create call's outcome is unknown. SUCCESS, FAILED, CLOSED are terminal.
2. ``decide(order, event, *, now)`` names a trigger for the input, then the table below picks the
   first row for that trigger, the order's state and the fact's source. Rows are read top to bottom.
3. A report is checked before the table, in this order: appId/merchantNo (when present), currency,
   amount (exactly equal). A mismatch is an anomaly row: nothing changes.
4. Only a notification or a query makes an order SUCCESS; a SUCCESS hint from /orderAndPay only asks
   for an early query ("do not rely solely on the status returned by orderAndPay").
5. A terminal state is never regressed. A contradiction from a notification is confirmed by query
   first (CONFIRM); a contradiction confirmed by a query is an anomaly for an operator.
6. FAILED reported while CLOSED, or CLOSED while FAILED, is a DUPLICATE: both mean "not paid"; the
   first terminal status stays.
7. The only way out of a terminal state is an operator turning FAILED/CLOSED into SUCCESS after a
   LATE_SUCCESS was confirmed by a fresh query. SUCCESS is never left: a contradicted success is
   resolved by a refund.
8. ORDER_NOT_EXIST: an UNKNOWN order not found ``NOT_FOUND_GRACE`` after its last submit goes back to
   CREATED and is resubmitted with the same outTradeNo; a PENDING order not found
   ``NOT_FOUND_ALARM`` after creation is an anomaly (eventual consistency until then).
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
    Effect,
    EmitEvent,
    Outcome,
    Resubmit,
    Row,
    SaveToken,
    Source,
    anomaly_effects,
    check_report,
    money_mismatch,
    not_found_trigger,
    rejection_trigger,
    require_decimal,
)
from .engine import Table


class OrderState(StrEnum):
    """Local state of a payment order; values are the gateway's words where they exist."""

    CREATED = "CREATED"
    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


CREATED, PENDING, UNKNOWN = OrderState.CREATED, OrderState.PENDING, OrderState.UNKNOWN
SUCCESS, FAILED, CLOSED = OrderState.SUCCESS, OrderState.FAILED, OrderState.CLOSED
_ALL = tuple(OrderState)
_OPEN = (CREATED, PENDING, UNKNOWN)
_DONE = (SUCCESS, FAILED, CLOSED)
_SENT = (UNKNOWN, PENDING, *_DONE)  # every state past CREATED
_UNPAID = (FAILED, CLOSED)
APPLIED, NOOP, DUPLICATE = Outcome.APPLIED, Outcome.NOOP, Outcome.DUPLICATE
ANOMALY, CONFIRM, REJECTED = Outcome.ANOMALY, Outcome.CONFIRM, Outcome.REJECTED
NOTIFIED = Source.NOTIFICATION
_QUERY = (ConfirmByQuery(),)
_SUCCEEDED = (EmitEvent(type="payment.succeeded"),)
_FAILED = (EmitEvent(type="payment.failed"),)
_CLOSED = (EmitEvent(type="payment.closed"),)
APP_MISMATCH, CURRENCY_MISMATCH = AnomalyKind.APP_MISMATCH, AnomalyKind.CURRENCY_MISMATCH
AMOUNT_MISMATCH, LATE_SUCCESS = AnomalyKind.AMOUNT_MISMATCH, AnomalyKind.LATE_SUCCESS
SUCCESS_CONTRADICTED, NOT_FOUND = AnomalyKind.SUCCESS_CONTRADICTED, AnomalyKind.NOT_FOUND_AT_GATEWAY

NOT_FOUND_GRACE: Final = timedelta(seconds=60)
NOT_FOUND_ALARM: Final = timedelta(hours=1)

# fmt: off
ORDER_TRANSITIONS: Final[tuple[Row[OrderState], ...]] = (
    #   trigger                     sources             dest     outcome    effects, via=, anomaly=
    # -- a report that does not match the order (checked first, in this order)
    Row("report_app_mismatch",      _ALL,               None,    ANOMALY,   anomaly=APP_MISMATCH),
    Row("report_currency_mismatch", _ALL,               None,    ANOMALY,   anomaly=CURRENCY_MISMATCH),
    Row("report_amount_mismatch",   _ALL,               None,    ANOMALY,   anomaly=AMOUNT_MISMATCH),
    # -- answers to /orderAndPay
    Row("submit_accepted",          (CREATED, UNKNOWN), PENDING, APPLIED),
    Row("submit_accepted",          (PENDING,),         None,    DUPLICATE),
    Row("submit_accepted",          _DONE,              None,    NOOP),
    Row("submit_rejected",          (CREATED, UNKNOWN), FAILED,  APPLIED,   _FAILED),
    Row("submit_rejected",          (FAILED,),          None,    DUPLICATE),
    Row("submit_rejected",          (PENDING, SUCCESS, CLOSED), None, NOOP),
    Row("submit_unknown",           (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_unknown",           _SENT,              None,    NOOP),
    Row("submit_duplicate",         (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_duplicate",         _SENT,              None,    NOOP),
    # -- verified notifications and queries
    Row("report_pending",           (UNKNOWN,),         PENDING, APPLIED),
    Row("report_pending",           (CREATED, PENDING, *_DONE), None, NOOP),
    Row("report_success",           _OPEN,              SUCCESS, APPLIED,   _SUCCEEDED),
    Row("report_success",           (SUCCESS,),         None,    DUPLICATE),
    Row("report_success",           _UNPAID,            None,    CONFIRM,   _QUERY, via=NOTIFIED),
    Row("report_success",           _UNPAID,            None,    ANOMALY,   anomaly=LATE_SUCCESS),
    Row("report_failed",            _OPEN,              FAILED,  APPLIED,   _FAILED),
    Row("report_failed",            _UNPAID,            None,    DUPLICATE),
    Row("report_failed",            (SUCCESS,),         None,    CONFIRM,   _QUERY, via=NOTIFIED),
    Row("report_failed",            (SUCCESS,),         None,    ANOMALY,   anomaly=SUCCESS_CONTRADICTED),
    Row("report_closed",            _OPEN,              CLOSED,  APPLIED,   _CLOSED),
    Row("report_closed",            _UNPAID,            None,    DUPLICATE),
    Row("report_closed",            (SUCCESS,),         None,    CONFIRM,   _QUERY, via=NOTIFIED),
    Row("report_closed",            (SUCCESS,),         None,    ANOMALY,   anomaly=SUCCESS_CONTRADICTED),
    # -- /orderQuery said ORDER_NOT_EXIST; overdue = past the grace (UNKNOWN) or the alarm (PENDING)
    Row("not_found_overdue",        (UNKNOWN,),         CREATED, APPLIED,   (Resubmit(),)),
    Row("not_found_overdue",        (PENDING,),         None,    ANOMALY,   anomaly=NOT_FOUND),
    Row("not_found",                _ALL,               None,    NOOP),
    # -- operator decisions: the only edges out of a terminal state; anything else is refused
    Row("operator_to_success",      _UNPAID,            SUCCESS, APPLIED,   _SUCCEEDED),
    *(Row(f"operator_to_{target.lower()}", _ALL, None, REJECTED) for target in OrderState),
)
# fmt: on

_TABLE: Final = Table("orders", OrderState, ORDER_TRANSITIONS)
LEGAL_ORDER_EDGES: Final[frozenset[tuple[OrderState, OrderState]]] = _TABLE.edges
_REPORT_STATUSES: Final = frozenset({"PENDING", "SUCCESS", "FAILED", "CLOSED"})


def is_terminal(state: OrderState) -> bool:
    """True for SUCCESS, FAILED and CLOSED: states a report can never leave."""
    return state in (SUCCESS, FAILED, CLOSED)


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

    def __post_init__(self) -> None:
        require_decimal("amount", self.amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitAccepted:
    """/orderAndPay answered APPLY_SUCCESS with ``status_hint`` PENDING or SUCCESS."""

    status_hint: str = "PENDING"

    def __post_init__(self) -> None:
        if self.status_hint not in ("PENDING", "SUCCESS"):
            raise ValueError(f"status_hint must be PENDING or SUCCESS, got {self.status_hint!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRejected:
    """/orderAndPay refused the request with ``code`` (a decline with no effect at the gateway)."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitUnknown:
    """The /orderAndPay call's outcome is unknown (timeout, connection lost, unreadable answer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitDuplicate:
    """/orderAndPay answered ORDER_REPEAT: the outTradeNo is already known to the gateway."""


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

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("an operator decision needs a reason")


OrderEvent: TypeAlias = (
    SubmitAccepted
    | SubmitRejected
    | SubmitUnknown
    | SubmitDuplicate
    | GatewayReport
    | GatewayNotFound
    | OperatorResolve
)


def _mismatch(order: OrderFacts, report: GatewayReport) -> str | None:
    """The mismatch trigger for a report that does not fit the order, or None when it fits."""
    if (report.app_id is not None and report.app_id != order.app_id) or (
        report.merchant_no is not None and report.merchant_no != order.merchant_no
    ):
        return "report_app_mismatch"
    return money_mismatch(order, report)


_FIXED_TRIGGERS: Final[dict[type, str]] = {
    SubmitAccepted: "submit_accepted",
    SubmitUnknown: "submit_unknown",
    SubmitDuplicate: "submit_duplicate",
}


def _trigger(order: OrderFacts, event: OrderEvent, now: datetime, grace: timedelta, alarm: timedelta) -> str:
    """The table trigger for ``event`` given the order (the guards live here)."""
    if isinstance(event, GatewayReport):
        return _mismatch(order, event) or f"report_{event.status.lower()}"
    if isinstance(event, SubmitRejected):
        return rejection_trigger(event.code)
    if isinstance(event, GatewayNotFound):
        return not_found_trigger(order, UNKNOWN, PENDING, now, (grace, alarm))
    if isinstance(event, OperatorResolve):
        return f"operator_to_{event.to_state.lower()}"
    return _FIXED_TRIGGERS[type(event)]


def _source(event: OrderEvent) -> Source:
    """Where the input came from."""
    if isinstance(event, GatewayReport):
        return event.source
    return Source.OPERATOR if isinstance(event, OperatorResolve) else Source.API


def _extra(order: OrderFacts, event: OrderEvent, row: Row[OrderState]) -> tuple[Effect, ...]:
    """Effects that depend on the input rather than on the row alone."""
    if row.anomaly is not None:
        return anomaly_effects(row, order.state, _source(event))
    if row.outcome is not APPLIED:
        return ()
    if isinstance(event, SubmitAccepted) and event.status_hint == "SUCCESS":
        return _QUERY
    if isinstance(event, GatewayReport) and row.dest is SUCCESS and order.tokenize and event.has_token:
        return (SaveToken(user_id=order.user_id), EmitEvent(type="token.saved"))
    return ()


def decide(
    order: OrderFacts,
    event: OrderEvent,
    *,
    now: datetime,
    grace: timedelta = NOT_FOUND_GRACE,
    alarm: timedelta = NOT_FOUND_ALARM,
) -> Decision[OrderState]:
    """Decide what ``event`` does to ``order``: the table's row, the new state and the effects."""
    trigger = _trigger(order, event, now, grace, alarm)
    return _TABLE.decide(order.state, trigger, _source(event), lambda row: _extra(order, event, row))
