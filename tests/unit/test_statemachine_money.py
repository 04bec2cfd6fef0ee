"""Refund arithmetic: the refundable balance, request checks, one-in-progress, unknown refunds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statemachine import (
    AnomalyKind,
    Outcome,
    RecordAnomaly,
    RefundCheck,
    RefundReport,
    RefundState,
    Source,
    check_refund_request,
    decide_unknown_refund,
    may_submit,
    refundable,
    remaining_if_succeeded,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
C, RP, U = RefundState.CREATED, RefundState.REFUND_PENDING, RefundState.UNKNOWN
RS, RF = RefundState.REFUND_SUCCESS, RefundState.REFUND_FAILED
D = Decimal


def test_every_refund_but_a_failed_one_counts() -> None:
    """CREATED, REFUND_PENDING, UNKNOWN and REFUND_SUCCESS all reduce the balance; REFUND_FAILED does not."""
    refunds = [(C, D("1.00")), (RP, D("2.00")), (U, D("3.00")), (RS, D("0.50")), (RF, D("100"))]
    assert refundable(D("10.00"), refunds) == D("3.50")


def test_no_refunds_leave_everything_refundable() -> None:
    """An empty history leaves the paid amount."""
    assert refundable(D("10.00"), []) == D("10.00")


def test_refundable_accepts_a_generator_and_stays_decimal() -> None:
    """The balance is a Decimal even from an iterator."""
    assert refundable(D("0.30"), ((RS, D("0.10")) for _ in range(3))) == D("0.00")


def test_paid_must_be_decimal() -> None:
    """A float paid amount is a caller bug."""
    with pytest.raises(TypeError):
        refundable(10.0, [])  # type: ignore[arg-type]


def test_remaining_if_succeeded_counts_this_refund_as_successful() -> None:
    """The balance after this refund succeeds: paid minus the others that count, minus this one."""
    assert remaining_if_succeeded(D("10"), [(RS, D("6")), (RF, D("9"))], D("5")) == D("-1")


@pytest.mark.parametrize(
    ("states", "expected"),
    [([], True), ([C, RS, RF], True), ([C, RP], False), ([U], False)],
)
def test_one_refund_in_progress_at_a_time(states: list[RefundState], expected: bool) -> None:
    """A refund may be submitted only while none is REFUND_PENDING or UNKNOWN."""
    assert may_submit([(s, D(1)) for s in states]) is expected


def check(**changes: object) -> RefundCheck:
    """check_refund_request for a 10.00 USD paid order with 4.00 already refunded, asking 6.00."""
    args: dict[str, object] = {
        "order_state": "SUCCESS",
        "paid": D("10.00"),
        "currency": "USD",
        "refunds": [(RS, D("4.00"))],
        "amount": D("6.00"),
        "refund_currency": "USD",
        **changes,
    }
    return check_refund_request(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"order_state": "PENDING", "refund_currency": "EUR", "amount": D(0)}, "order_not_paid"),
        ({"order_state": "FAILED"}, "order_not_paid"),
        ({"refund_currency": "EUR", "amount": D(0)}, "currency_mismatch"),
        ({"amount": D(0), "refunds": [(RS, D(10))]}, "amount_not_positive"),
        ({"amount": D("-1")}, "amount_not_positive"),
        ({"amount": D("NaN")}, "amount_not_positive"),
        ({"amount": D("6.01")}, "exceeds_refundable"),
        ({"refunds": [(RP, D("4.01"))]}, "exceeds_refundable"),
        ({"refunds": [(RF, D("4.01"))], "amount": D("10.00")}, None),
    ],
)
def test_request_rules_in_order(changes: dict[str, object], reason: str | None) -> None:
    """Paid order, same currency, positive amount, within the balance: the first broken rule is named."""
    result = check(**changes)
    assert (result.ok, result.reason) == (reason is None, reason)


def test_check_exposes_the_balance() -> None:
    """The check reports the balance it used."""
    assert check().refundable == D("6.00")


money = st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2)


@given(money, st.lists(st.tuples(st.sampled_from(list(RefundState)), money)), money)
def test_an_accepted_request_never_takes_the_balance_below_zero(
    paid: Decimal, refunds: list[tuple[RefundState, Decimal]], amount: Decimal
) -> None:
    """Whatever the history, an accepted request leaves a balance ≥ 0."""
    result = check(paid=paid, refunds=refunds, amount=amount)
    if result.ok:
        assert refundable(paid, [*refunds, (C, amount)]) >= 0


# -- reports for an outRefundNo we do not know


def unknown(status: str, amount: str, **changes: object) -> tuple[Outcome, RefundState | None, str]:
    """Decide a USD report of ``amount`` against a paid 10.00 order with 4.00 refunded."""
    args: dict[str, object] = {
        "out_trade_no": "T1",
        "order_state": "SUCCESS",
        "paid": D("10.00"),
        "currency": "USD",
        "refunds": [(RS, D("4.00"))],
        "now": NOW,
        **changes,
    }
    report = RefundReport(status=status, amount=D(amount), currency="USD", source=Source.NOTIFICATION)
    decision = decide_unknown_refund(report, **args)  # type: ignore[arg-type]
    assert decision.from_state is C
    return decision.outcome, decision.to_state, decision.trigger


@pytest.mark.parametrize(
    ("status", "amount", "expected"),
    [
        ("REFUND_SUCCESS", "6.00", (Outcome.APPLIED, RS, "report_success")),
        ("REFUND_PENDING", "1.00", (Outcome.APPLIED, RP, "report_pending")),
        ("REFUND_FAILED", "1.00", (Outcome.APPLIED, RF, "report_failed")),
        ("REFUND_FAILED", "9.00", (Outcome.APPLIED, RF, "report_failed")),
        ("REFUND_SUCCESS", "6.01", (Outcome.ANOMALY, None, "report_unfit")),
        ("REFUND_PENDING", "6.01", (Outcome.ANOMALY, None, "report_unfit")),
    ],
)
def test_an_unknown_refund_is_adopted_when_it_fits(
    status: str, amount: str, expected: tuple[object, ...]
) -> None:
    """Within the balance it becomes a refund; a failed one needs no balance; beyond it, an anomaly."""
    assert unknown(status, amount) == expected


def test_an_unknown_refund_of_an_unpaid_order_is_an_anomaly() -> None:
    """An order that was never paid cannot have refunds: UNKNOWN_REFUND with the reason."""
    report = RefundReport(status="REFUND_FAILED", amount=D(1), currency="USD", source=Source.POLL)
    decision = decide_unknown_refund(
        report, out_trade_no="T1", order_state="FAILED", paid=D(10), currency="USD", refunds=[], now=NOW
    )
    assert decision.effects[0] == RecordAnomaly(
        kind=AnomalyKind.UNKNOWN_REFUND, detail="report_unfit in CREATED via poll: order_not_paid"
    )
