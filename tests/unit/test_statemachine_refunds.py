"""The refund machine: one test per table row and per guard, plus the never-over-refunded property."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statemachine import (
    LEGAL_REFUND_EDGES,
    MAX_RETRY_LATER,
    NOT_FOUND_ALARM,
    NOT_FOUND_GRACE,
    REFUND_TRANSITIONS,
    RETRY_LATER_CODES,
    AnomalyKind,
    Answer,
    ConfirmByQuery,
    EmitEvent,
    Outcome,
    RecordAnomaly,
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
    Resubmit,
    SendLedger,
    Source,
    StartNextRefund,
    UnfitRefundReport,
    decide_refund,
    is_terminal_refund,
    remaining_if_succeeded,
)
from tests.unit.table_rows import reachable

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=1)
C, RP, U = RefundState.CREATED, RefundState.REFUND_PENDING, RefundState.UNKNOWN
RS, RF = RefundState.REFUND_SUCCESS, RefundState.REFUND_FAILED


def refund(state: RefundState, **changes: object) -> RefundFacts:
    """A 4.00 USD refund of order T1, created and submitted just now."""
    base = RefundFacts(
        state=state,
        amount=Decimal("4.00"),
        currency="USD",
        out_trade_no="T1",
        created_at=NOW,
        last_submit_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def report(status: str, source: Source = Source.POLL, **changes: object) -> RefundReport:
    """A report that matches ``refund()`` exactly."""
    base = RefundReport(status=status, amount=Decimal("4.00"), currency="USD", source=source)
    return replace(base, **changes)  # type: ignore[arg-type]


FIRST = SendLedger(sends=1)  # one send, its answer being read
IN_DOUBT = SendLedger(sends=2, clean=0)  # the first send's answer was never read
WAITED_ENOUGH = SendLedger(sends=MAX_RETRY_LATER, clean=MAX_RETRY_LATER - 1)
REFUSED = SendLedger(sends=1, clean=1, last_answer=Answer.REJECTED)
REPEATED = SendLedger(sends=1, clean=0, last_answer=Answer.REPEAT)

# How to reach each trigger from a given state: (facts, event, now, refundable_if_applied).
Case = tuple[RefundFacts, RefundEvent, datetime, Decimal | None]
OK = Decimal("6.00")
REACH: dict[str, Callable[[RefundState, Source], Case]] = {
    "report_currency_mismatch": lambda s, v: (
        refund(s),
        report("REFUND_SUCCESS", v, currency="EUR"),
        NOW,
        OK,
    ),
    "report_amount_mismatch": lambda s, v: (
        refund(s),
        report("REFUND_SUCCESS", v, amount=Decimal(5)),
        NOW,
        OK,
    ),
    "send_claimed": lambda s, v: (refund(s), RefundSubmitClaimed(slot_free=True), NOW, None),
    "send_waits_turn": lambda s, v: (refund(s), RefundSubmitClaimed(slot_free=False), NOW, None),
    "submit_pending": lambda s, v: (refund(s), RefundSubmitAccepted(status="REFUND_PENDING"), NOW, None),
    "submit_failed": lambda s, v: (refund(s), RefundSubmitAccepted(status="REFUND_FAILED"), NOW, None),
    "submit_rejected_wait": lambda s, v: (
        refund(s, ledger=FIRST), RefundSubmitRejected(code="REFUND_FAILED", send_no=1), NOW, None),
    "submit_wait_exhausted": lambda s, v: (
        refund(s, ledger=WAITED_ENOUGH), RefundSubmitRejected(code="REFUND_FAILED", send_no=MAX_RETRY_LATER), NOW,
        None),
    "submit_rejected": lambda s, v: (
        refund(s, ledger=FIRST), RefundSubmitRejected(code="PARAMS_INVALID", send_no=1), NOW, None),
    "submit_rejected_resend": lambda s, v: (
        refund(s, ledger=IN_DOUBT), RefundSubmitRejected(code="PARAMS_INVALID", send_no=2), NOW, None),
    "submit_unknown": lambda s, v: (refund(s), RefundSubmitUnknown(), NOW, None),
    "submit_duplicate": lambda s, v: (refund(s), RefundSubmitDuplicate(), NOW, None),
    "report_pending": lambda s, v: (refund(s), report("REFUND_PENDING", v), NOW, OK),
    "report_success_over_paid": lambda s, v: (refund(s), report("REFUND_SUCCESS", v), NOW, Decimal("-0.01")),
    "report_success": lambda s, v: (refund(s), report("REFUND_SUCCESS", v), NOW, OK),
    "report_failed": lambda s, v: (refund(s), report("REFUND_FAILED", v), NOW, OK),
    "report_unfit": lambda s, v: (
        refund(s),
        UnfitRefundReport(report=report("REFUND_SUCCESS", v), reason="r"),
        NOW,
        OK,
    ),
    "not_found_overdue": lambda s, v: (
        refund(s, created_at=LONG_AGO, last_submit_at=LONG_AGO),
        RefundNotFound(),
        NOW,
        None,
    ),
    "not_found_after_refusal": lambda s, v: (
        refund(s, created_at=LONG_AGO, last_submit_at=LONG_AGO, ledger=REFUSED),
        RefundNotFound(),
        NOW,
        None,
    ),
    "not_found_alarm": lambda s, v: (
        refund(s, created_at=LONG_AGO, last_submit_at=LONG_AGO, accepted_at=LONG_AGO, ledger=REPEATED),
        RefundNotFound(),
        NOW,
        None,
    ),
    "not_found": lambda s, v: (refund(s), RefundNotFound(), NOW, None),
}


@pytest.mark.parametrize(("index", "state", "source"), reachable(REFUND_TRANSITIONS))
def test_each_table_row_decides_as_written(index: int, state: RefundState, source: Source) -> None:
    """decide_refund() follows the row: its outcome, its destination, its effects, its anomaly."""
    row = REFUND_TRANSITIONS[index]
    facts, event, now, balance = REACH[row.trigger](state, source)
    decision = decide_refund(facts, event, now=now, refundable_if_applied=balance)
    assert (decision.trigger, decision.outcome, decision.to_state) == (row.trigger, row.outcome, row.dest)
    assert decision.from_state is state
    assert decision.effects[: len(row.effects)] == row.effects
    kinds = [e.kind for e in decision.effects if isinstance(e, RecordAnomaly)]
    stated = [e.kind for e in row.effects if isinstance(e, RecordAnomaly)]  # an anomaly the row records as it moves
    assert kinds == stated + ([row.anomaly] if row.anomaly else [])


def test_every_row_fires_for_some_state() -> None:
    """No row is dead: each is the first match for at least one state."""
    assert {index for index, _, _ in reachable(REFUND_TRANSITIONS)} == set(range(len(REFUND_TRANSITIONS)))


def test_table_rows_are_consistent() -> None:
    """APPLIED rows move; anomaly rows name a kind; every terminal arrival frees the refund slot."""
    for row in REFUND_TRANSITIONS:
        assert (row.outcome is Outcome.APPLIED) == (row.dest is not None), row
        assert (row.outcome is Outcome.ANOMALY) == (row.anomaly is not None), row
        assert (row.outcome is Outcome.CONFIRM) == (ConfirmByQuery() in row.effects and row.dest is None), row
        if row.dest is not None and is_terminal_refund(row.dest):
            assert StartNextRefund() in row.effects, row


def test_legal_edges_are_exactly_these() -> None:
    """The audit checker's list of legal refund edges, spelled out."""
    assert {
        (C, RP), (U, RP), (C, RF), (U, RF), (RP, RF), (C, U),
        (C, RS), (U, RS), (RP, RS), (U, C),
    } == LEGAL_REFUND_EDGES  # fmt: skip


def test_terminal_states() -> None:
    """REFUND_SUCCESS and REFUND_FAILED are terminal."""
    assert [s for s in RefundState if is_terminal_refund(s)] == [RS, RF]


# -- guards


@pytest.mark.parametrize("code", sorted(RETRY_LATER_CODES))
def test_not_now_codes_put_the_refund_back_to_wait(code: str) -> None:
    """Insufficient balance or a refund in progress elsewhere, on a first send: back to CREATED, no event."""
    decision = decide_refund(refund(U, ledger=FIRST), RefundSubmitRejected(code=code, send_no=1), now=NOW,
                             refundable_if_applied=None)
    assert (decision.outcome, decision.to_state, decision.effects) == (Outcome.APPLIED, C, ())


@pytest.mark.parametrize(
    ("code", "trigger", "state"),
    [
        ("PARAMS_INVALID", "submit_rejected", RF),
        ("ORDER_REPEAT", "submit_duplicate", U),
        ("SYSTEM_ERROR", "submit_unknown", U),
    ],
)
def test_a_refusal_fails_the_refund_unless_its_code_leaves_doubt(
    code: str, trigger: str, state: RefundState
) -> None:
    """ORDER_REPEAT and system errors may hide a created refund: UNKNOWN and a query."""
    decision = decide_refund(refund(U, ledger=FIRST), RefundSubmitRejected(code=code, send_no=1), now=NOW,
                             refundable_if_applied=None)
    assert (decision.trigger, decision.to_state) == (trigger, None if state is U else state)


def test_currency_is_checked_before_amount() -> None:
    """A report wrong in both ways names the currency."""
    event = report("REFUND_SUCCESS", currency="EUR", amount=Decimal(1))
    decision = decide_refund(refund(RP), event, now=NOW, refundable_if_applied=OK)
    assert decision.trigger == "report_currency_mismatch"


@pytest.mark.parametrize(("balance", "outcome"), [(Decimal(0), Outcome.APPLIED), (None, Outcome.APPLIED),
                                                  (Decimal("-0.01"), Outcome.ANOMALY)])  # fmt: skip
def test_a_success_that_would_overdraw_the_order_is_an_anomaly(
    balance: Decimal | None, outcome: Outcome
) -> None:
    """Refundable exactly used up is fine; below zero the success is recorded as REFUND_OVER_PAID."""
    decision = decide_refund(refund(RP), report("REFUND_SUCCESS"), now=NOW, refundable_if_applied=balance)
    assert decision.outcome is outcome


def test_the_over_paid_guard_does_not_hide_a_duplicate() -> None:
    """A success already applied is a duplicate, whatever the balance says."""
    decision = decide_refund(refund(RS), report("REFUND_SUCCESS"), now=NOW, refundable_if_applied=Decimal(-1))
    assert decision.outcome is Outcome.DUPLICATE


def test_over_paid_anomaly_detail() -> None:
    """The anomaly says which row, which state and which source."""
    decision = decide_refund(refund(RP), report("REFUND_SUCCESS"), now=NOW, refundable_if_applied=Decimal(-1))
    assert decision.effects == (
        RecordAnomaly(
            kind=AnomalyKind.REFUND_OVER_PAID, detail="report_success_over_paid in REFUND_PENDING via poll"
        ),
        EmitEvent(type="anomaly.detected"),
    )


def test_unfit_report_detail_carries_the_reason() -> None:
    """An unknown refund that does not fit records why."""
    event = UnfitRefundReport(
        report=report("REFUND_SUCCESS", Source.NOTIFICATION), reason="exceeds_refundable"
    )
    decision = decide_refund(refund(C), event, now=NOW, refundable_if_applied=None)
    assert decision.effects[0] == RecordAnomaly(
        kind=AnomalyKind.UNKNOWN_REFUND, detail="report_unfit in CREATED via notification: exceeds_refundable"
    )


@pytest.mark.parametrize(
    ("since_submit", "outcome"),
    [(NOT_FOUND_GRACE - timedelta(microseconds=1), Outcome.NOOP), (NOT_FOUND_GRACE, Outcome.APPLIED)],
)
def test_unknown_not_found_is_resubmitted_after_the_grace(since_submit: timedelta, outcome: Outcome) -> None:
    """An UNKNOWN refund the gateway does not know waits its turn again and is resubmitted."""
    facts = refund(U, created_at=LONG_AGO, last_submit_at=NOW - since_submit)
    decision = decide_refund(facts, RefundNotFound(), now=NOW, refundable_if_applied=None)
    assert decision.outcome is outcome
    if outcome is Outcome.APPLIED:
        assert (decision.to_state, decision.effects) == (C, (Resubmit(), StartNextRefund()))


def test_grace_and_alarm_are_keywords() -> None:
    """grace= and alarm= override the constants; a missing submit (and acceptance) time falls back to creation."""
    unknown = refund(U, created_at=NOW - timedelta(seconds=1), last_submit_at=None)
    pending = refund(RP, created_at=NOW - timedelta(seconds=1), last_submit_at=None)
    one = timedelta(seconds=1)
    assert (
        decide_refund(unknown, RefundNotFound(), now=NOW, refundable_if_applied=None, grace=one).to_state is C
    )
    assert (
        decide_refund(pending, RefundNotFound(), now=NOW, refundable_if_applied=None, alarm=one).outcome
        is Outcome.ANOMALY
    )


@pytest.mark.parametrize(
    ("age", "outcome"),
    [(NOT_FOUND_ALARM - timedelta(microseconds=1), Outcome.NOOP), (NOT_FOUND_ALARM, Outcome.ANOMALY)],
)
def test_pending_not_found_is_an_anomaly_only_after_the_alarm(age: timedelta, outcome: Outcome) -> None:
    """A REFUND_PENDING refund not found is eventual consistency until the alarm after Checus accepted it."""
    facts = refund(RP, created_at=LONG_AGO, last_submit_at=LONG_AGO, accepted_at=NOW - age)
    assert decide_refund(facts, RefundNotFound(), now=NOW, refundable_if_applied=None).outcome is outcome


@pytest.mark.parametrize(
    "build",
    [
        lambda: report("SUCCESS"),
        lambda: report("REFUND_SUCCESS", Source.OPERATOR),
        lambda: report("REFUND_SUCCESS", amount=4.0),
        lambda: refund(C, amount=4),
        lambda: RefundSubmitAccepted(status="REFUND_SUCCESS"),
    ],
)
def test_impossible_input_raises(build: Callable[[], object]) -> None:
    """Unknown statuses, sources and non-Decimal amounts are caller bugs."""
    with pytest.raises((ValueError, TypeError)):
        build()


# -- properties

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100"), places=2)
refund_events: st.SearchStrategy[RefundEvent] = st.one_of(
    st.builds(
        report,
        st.sampled_from(["REFUND_PENDING", "REFUND_SUCCESS", "REFUND_FAILED"]),
        st.sampled_from([Source.NOTIFICATION, Source.POLL]),
    ),
    st.builds(RefundSubmitAccepted, status=st.sampled_from(["REFUND_PENDING", "REFUND_FAILED"])),
    st.builds(
        RefundSubmitRejected, code=st.sampled_from(["REFUND_FAILED", "PARAMS_INVALID", "ORDER_REPEAT"]),
        send_no=st.integers(min_value=1, max_value=3),
    ),
    st.builds(RefundSubmitClaimed, slot_free=st.booleans()),
    st.just(RefundSubmitUnknown()),
    st.just(RefundNotFound()),
)


@given(
    amounts,
    st.lists(amounts, min_size=1, max_size=5),
    st.lists(st.tuples(st.integers(min_value=0, max_value=4), refund_events), max_size=30),
)
def test_successful_refunds_never_exceed_paid(
    paid: Decimal, sizes: list[Decimal], sequence: list[tuple[int, RefundEvent]]
) -> None:
    """With the balance passed correctly, Σ successful refunds stays ≤ paid, however reports arrive."""
    refunds = [refund(C, amount=size) for size in sizes]
    for index, drawn in sequence:
        i = index % len(refunds)
        current = refunds[i]
        event = replace(drawn, amount=current.amount) if isinstance(drawn, RefundReport) else drawn
        others = [(r.state, r.amount) for j, r in enumerate(refunds) if j != i]
        balance = remaining_if_succeeded(paid, others, current.amount)
        decision = decide_refund(current, event, now=NOW + timedelta(hours=2), refundable_if_applied=balance)
        if decision.outcome is not Outcome.APPLIED:
            assert decision.to_state is None
            continue
        assert decision.to_state is not None
        assert (current.state, decision.to_state) in LEGAL_REFUND_EDGES
        refunds[i] = replace(current, state=decision.to_state)
        assert sum((r.amount for r in refunds if r.state is RS), Decimal(0)) <= paid
