"""Refund arithmetic and the rules a refund request must pass before any gateway call.

Rules:

1. Amounts are ``Decimal`` in the currency's major units; nothing here rounds or converts.
2. The refundable balance is the paid amount minus every refund that is not REFUND_FAILED:
   CREATED, REFUND_PENDING, UNKNOWN and REFUND_SUCCESS all count, because a refund whose outcome
   is unknown may have happened. The balance is never driven negative on purpose; a negative
   value means the history already contradicts itself.
3. A request is checked in this order: the order is paid (SUCCESS), the currency is the order's,
   the amount is positive, the amount fits the refundable balance. A refund in progress does not
   reject a request: the new refund waits in CREATED until ``may_submit`` (Checus allows one
   refund in progress per order). The shell enforces both atomically in SQL.
4. A report for an outRefundNo we do not know is adopted as a new refund when it fits the order
   (a failed one needs no balance); otherwise it is an UNKNOWN_REFUND anomaly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .common import Decision, require_decimal
from .order_inputs import OrderState
from .refund_inputs import RefundFacts, RefundReport, RefundState, UnfitRefundReport
from .refunds import REFUND_IN_PROGRESS, decide_refund


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundCheck:
    """The verdict on a refund request: ``reason`` is None when it may go ahead."""

    reason: str | None
    refundable: Decimal

    @property
    def ok(self) -> bool:
        """True when the request passed every rule."""
        return self.reason is None


def refundable(paid: Decimal, refunds: Iterable[tuple[RefundState, Decimal]]) -> Decimal:
    """Paid minus every refund that has not failed (an unknown outcome may have happened)."""
    require_decimal("paid", paid)
    return paid - sum(
        (amount for state, amount in refunds if state is not RefundState.REFUND_FAILED), Decimal(0)
    )


def remaining_if_succeeded(
    paid: Decimal, others: Iterable[tuple[RefundState, Decimal]], amount: Decimal
) -> Decimal:
    """What stays refundable if this refund (of ``amount``, not in ``others``) succeeds."""
    return refundable(paid, others) - amount


def may_submit(refunds: Iterable[tuple[RefundState, Decimal]]) -> bool:
    """True when no refund of the order is REFUND_PENDING or UNKNOWN (one in progress at a time)."""
    return not any(state in REFUND_IN_PROGRESS for state, _ in refunds)


def _reason(
    order_state: str, currency: str, amount: Decimal, refund_currency: str, balance: Decimal
) -> str | None:
    """The first rule the request breaks, or None."""
    if order_state != OrderState.SUCCESS:
        return "order_not_paid"
    if refund_currency != currency:
        return "currency_mismatch"
    if not amount.is_finite() or amount <= 0:
        return "amount_not_positive"
    if amount > balance:
        return "exceeds_refundable"
    return None


def check_refund_request(
    *,
    order_state: str,
    paid: Decimal,
    currency: str,
    refunds: Iterable[tuple[RefundState, Decimal]],
    amount: Decimal,
    refund_currency: str,
) -> RefundCheck:
    """Check a refund request against the order and its refunds, before any gateway call."""
    balance = refundable(paid, refunds)
    return RefundCheck(
        reason=_reason(order_state, currency, amount, refund_currency, balance), refundable=balance
    )


def decide_unknown_refund(
    report: RefundReport,
    *,
    out_trade_no: str,
    order_state: str,
    paid: Decimal,
    currency: str,
    refunds: Iterable[tuple[RefundState, Decimal]],
    now: datetime,
) -> Decision[RefundState]:
    """Adopt a report for an unknown outRefundNo as a new CREATED refund if it fits, else an anomaly."""
    check = check_refund_request(
        order_state=order_state,
        paid=paid,
        currency=currency,
        refunds=refunds,
        amount=report.amount,
        refund_currency=report.currency,
    )
    fits = check.ok or (report.status == RefundState.REFUND_FAILED and check.reason == "exceeds_refundable")
    facts = RefundFacts(
        state=RefundState.CREATED,
        amount=report.amount,
        currency=report.currency,
        out_trade_no=out_trade_no,
        created_at=now,
    )
    event = report if fits else UnfitRefundReport(report=report, reason=check.reason or "")
    return decide_refund(facts, event, now=now, refundable_if_applied=check.refundable - report.amount)
