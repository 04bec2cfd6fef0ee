"""The payment-order state machine: every rule that moves an order lives in this file.

Its vocabulary (``OrderState``, ``OrderFacts`` and the events) is in ``order_inputs``.

Rules, read before the table:

1. States: CREATED (stored, not yet sent) → PENDING (accepted by Checus) → SUCCESS | FAILED |
   CLOSED. UNKNOWN means a create call was sent (or is being sent) and its outcome is not known:
   a send is claimed (CREATED → UNKNOWN, ``send_claimed``) before the call, so one sender sends
   and a sender that dies leaves a record the query resolves. SUCCESS, FAILED, CLOSED are terminal.
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
8. A refusal of /orderAndPay fails the order only when the send is known to be the first that
   could have had an effect (``sending`` rule 3); a refusal of a resend, ORDER_REPEAT, and any
   answer we cannot read are resolved by query.
9. ORDER_NOT_EXIST (``common.not_found_trigger``): an UNKNOWN order not found ``NOT_FOUND_GRACE``
   after its last send goes back to CREATED and is sent again with the same outTradeNo; if that
   send was refused it is FAILED only once it is still not found ``NOT_FOUND_ALARM`` after it; a
   PENDING order (or one Checus answered ORDER_REPEAT) not found ``NOT_FOUND_ALARM`` after the
   last send Checus accepted is an anomaly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

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
    money_mismatch,
    not_found_trigger,
    rejection_trigger,
)
from .engine import Table
from .order_inputs import (
    GatewayNotFound,
    GatewayReport,
    OperatorResolve,
    OrderEvent,
    OrderFacts,
    OrderState,
    SubmitAccepted,
    SubmitClaimed,
    SubmitDuplicate,
    SubmitRejected,
    SubmitUnknown,
)

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
    # -- claiming the send: only a CREATED order is sent, by the one sender whose claim was written
    Row("send_claimed",             (CREATED,),         UNKNOWN, APPLIED),
    Row("send_claimed",             _SENT,              None,    REJECTED),
    # -- answers to /orderAndPay (a late answer may find the order CREATED again, or moved on)
    Row("submit_accepted",          (CREATED, UNKNOWN), PENDING, APPLIED),
    Row("submit_accepted",          (PENDING,),         None,    DUPLICATE),
    Row("submit_accepted",          _DONE,              None,    NOOP),
    Row("submit_rejected",          (UNKNOWN,),         FAILED,  APPLIED,   _FAILED),
    Row("submit_rejected",          (FAILED,),          None,    DUPLICATE),
    Row("submit_rejected",          (CREATED, PENDING, SUCCESS, CLOSED), None, NOOP),
    Row("submit_rejected_resend",   (UNKNOWN,),         None,    CONFIRM,   _QUERY),
    Row("submit_rejected_resend",   (CREATED, PENDING, *_DONE), None, NOOP),
    Row("submit_unknown",           (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_unknown",           (UNKNOWN,),         None,    CONFIRM,   _QUERY),
    Row("submit_unknown",           (PENDING, *_DONE),  None,    NOOP),
    Row("submit_duplicate",         (CREATED,),         UNKNOWN, APPLIED,   _QUERY),
    Row("submit_duplicate",         (UNKNOWN,),         None,    CONFIRM,   _QUERY),
    Row("submit_duplicate",         (PENDING, *_DONE),  None,    NOOP),
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
    # -- /orderQuery said ORDER_NOT_EXIST (rule 9 says which trigger)
    Row("not_found_overdue",        (UNKNOWN,),         CREATED, APPLIED,   (Resubmit(),)),
    Row("not_found_after_refusal",  (UNKNOWN,),         FAILED,  APPLIED,   _FAILED),
    Row("not_found_alarm",          (UNKNOWN, PENDING), None,    ANOMALY,   anomaly=NOT_FOUND),
    Row("not_found",                _ALL,               None,    NOOP),
    # -- operator decisions: the only edges out of a terminal state; anything else is refused
    Row("operator_to_success",      _UNPAID,            SUCCESS, APPLIED,   _SUCCEEDED),
    *(Row(f"operator_to_{target.lower()}", _ALL, None, REJECTED) for target in OrderState),
)
# fmt: on

_TABLE: Final = Table("orders", OrderState, ORDER_TRANSITIONS)
ORDER_TERMINAL: Final[frozenset[OrderState]] = frozenset(_DONE)
LEGAL_ORDER_EDGES: Final[frozenset[tuple[OrderState, OrderState]]] = _TABLE.edges


def is_terminal(state: OrderState) -> bool:
    """True for SUCCESS, FAILED and CLOSED: states a report can never leave."""
    return state in ORDER_TERMINAL






















def _mismatch(order: OrderFacts, report: GatewayReport) -> str | None:
    """The mismatch trigger for a report that does not fit the order, or None when it fits."""
    if (report.app_id is not None and report.app_id != order.app_id) or (
        report.merchant_no is not None and report.merchant_no != order.merchant_no
    ):
        return "report_app_mismatch"
    return money_mismatch(order, report)


_FIXED_TRIGGERS: Final[dict[type, str]] = {
    SubmitClaimed: "send_claimed",
    SubmitAccepted: "submit_accepted",
    SubmitUnknown: "submit_unknown",
    SubmitDuplicate: "submit_duplicate",
}


def _trigger(order: OrderFacts, event: OrderEvent, now: datetime, grace: timedelta, alarm: timedelta) -> str:
    """The table trigger for ``event`` given the order (the guards live here)."""
    if isinstance(event, GatewayReport):
        return _mismatch(order, event) or f"report_{event.status.lower()}"
    if isinstance(event, SubmitRejected):
        return rejection_trigger(order, event.code, event.send_no)
    if isinstance(event, GatewayNotFound):
        return not_found_trigger(order, UNKNOWN, PENDING, now, (grace, alarm))
    if isinstance(event, OperatorResolve):
        return f"operator_to_{event.to_state.lower()}"
    return _FIXED_TRIGGERS[type(event)]


def _source(event: OrderEvent) -> Source:
    """Where the input came from."""
    if isinstance(event, GatewayReport):
        return event.source
    if isinstance(event, GatewayNotFound):
        return Source.POLL
    return Source.OPERATOR if isinstance(event, OperatorResolve) else Source.API


def _extra(order: OrderFacts, event: OrderEvent, row: Row[OrderState]) -> tuple[Effect, ...]:
    """Effects that depend on the input rather than on the row alone."""
    if row.anomaly is not None:
        return anomaly_effects(row, order.state, _source(event))
    if row.outcome is not APPLIED:
        return ()
    if isinstance(event, SubmitAccepted) and event.status_hint == "SUCCESS":
        return _QUERY
    carries_token = isinstance(event, GatewayReport | OperatorResolve) and event.has_token
    if row.dest is SUCCESS and order.tokenize and carries_token:
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
