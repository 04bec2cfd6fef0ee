"""The order machine: one test per table row and per guard, plus properties over report sequences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import transitions
from hypothesis import given
from hypothesis import strategies as st

from statemachine import (
    LEGAL_ORDER_EDGES,
    NOT_FOUND_ALARM,
    NOT_FOUND_GRACE,
    ORDER_TRANSITIONS,
    AnomalyKind,
    Answer,
    ConfirmByQuery,
    Decision,
    EmitEvent,
    GatewayNotFound,
    GatewayReport,
    OperatorResolve,
    OrderEvent,
    OrderFacts,
    OrderState,
    Outcome,
    RecordAnomaly,
    Resubmit,
    SaveToken,
    SendLedger,
    Source,
    SubmitAccepted,
    SubmitClaimed,
    SubmitDuplicate,
    SubmitRejected,
    SubmitUnknown,
    decide,
    is_terminal,
)
from tests.unit.table_rows import reachable

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=1)
C, P, U = OrderState.CREATED, OrderState.PENDING, OrderState.UNKNOWN
S, F, X = OrderState.SUCCESS, OrderState.FAILED, OrderState.CLOSED


def order(state: OrderState, **changes: object) -> OrderFacts:
    """A 10.00 USD order for user u1, tokenization offered, created and submitted just now."""
    base = OrderFacts(
        state=state,
        amount=Decimal("10.00"),
        currency="USD",
        app_id="APP",
        merchant_no="M1",
        user_id="u1",
        tokenize=True,
        created_at=NOW,
        last_submit_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def report(status: str, source: Source = Source.POLL, **changes: object) -> GatewayReport:
    """A report that matches ``order()`` exactly."""
    base = GatewayReport(
        status=status, amount=Decimal("10.00"), currency="USD", source=source, app_id="APP", merchant_no="M1"
    )
    return replace(base, **changes)  # type: ignore[arg-type]


FIRST = SendLedger(sends=1)  # one send, its answer being read
IN_DOUBT = SendLedger(sends=2, clean=0)  # the first send's answer was never read
REFUSED = SendLedger(sends=1, clean=1, last_answer=Answer.REJECTED)
REPEATED = SendLedger(sends=1, clean=0, last_answer=Answer.REPEAT)

# How to reach each trigger from a given state: (facts, event, now).
Case = tuple[OrderFacts, OrderEvent, datetime]


def operator_case(target: OrderState) -> Callable[[OrderState, Source], Case]:
    """An operator asking for ``target``."""
    return lambda s, v: (order(s), OperatorResolve(to_state=target, reason="x"), NOW)


REACH: dict[str, Callable[[OrderState, Source], Case]] = {
    "report_app_mismatch": lambda s, v: (order(s), report("SUCCESS", v, app_id="OTHER"), NOW),
    "report_currency_mismatch": lambda s, v: (order(s), report("SUCCESS", v, currency="EUR"), NOW),
    "report_amount_mismatch": lambda s, v: (order(s), report("SUCCESS", v, amount=Decimal("10.01")), NOW),
    "send_claimed": lambda s, v: (order(s), SubmitClaimed(), NOW),
    "submit_accepted": lambda s, v: (order(s), SubmitAccepted(status_hint="PENDING"), NOW),
    "submit_rejected": lambda s, v: (order(s, ledger=FIRST), SubmitRejected(code="PAYMENT_REJECTED", send_no=1), NOW),
    "submit_rejected_resend": lambda s, v: (
        order(s, ledger=IN_DOUBT), SubmitRejected(code="PAYMENT_REJECTED", send_no=2), NOW),
    "submit_unknown": lambda s, v: (order(s), SubmitUnknown(), NOW),
    "submit_duplicate": lambda s, v: (order(s), SubmitDuplicate(), NOW),
    "report_pending": lambda s, v: (order(s), report("PENDING", v), NOW),
    "report_success": lambda s, v: (order(s), report("SUCCESS", v), NOW),
    "report_failed": lambda s, v: (order(s), report("FAILED", v), NOW),
    "report_closed": lambda s, v: (order(s), report("CLOSED", v), NOW),
    "not_found_overdue": lambda s, v: (
        order(s, created_at=LONG_AGO, last_submit_at=LONG_AGO),
        GatewayNotFound(),
        NOW,
    ),
    "not_found_after_refusal": lambda s, v: (
        order(s, created_at=LONG_AGO, last_submit_at=LONG_AGO, ledger=REFUSED),
        GatewayNotFound(),
        NOW,
    ),
    "not_found_alarm": lambda s, v: (
        order(s, created_at=LONG_AGO, last_submit_at=LONG_AGO, accepted_at=LONG_AGO, ledger=REPEATED),
        GatewayNotFound(),
        NOW,
    ),
    "not_found": lambda s, v: (order(s), GatewayNotFound(), NOW),
    **{f"operator_to_{t.lower()}": operator_case(t) for t in OrderState},
}


@pytest.mark.parametrize(("index", "state", "source"), reachable(ORDER_TRANSITIONS))
def test_each_table_row_decides_as_written(index: int, state: OrderState, source: Source) -> None:
    """decide() follows the row: its outcome, its destination, its effects, its anomaly."""
    row = ORDER_TRANSITIONS[index]
    facts, event, now = REACH[row.trigger](state, source)
    decision = decide(facts, event, now=now)
    assert (decision.trigger, decision.outcome, decision.to_state) == (row.trigger, row.outcome, row.dest)
    assert decision.from_state is state
    assert decision.effects[: len(row.effects)] == row.effects
    kinds = [e.kind for e in decision.effects if isinstance(e, RecordAnomaly)]
    assert kinds == ([row.anomaly] if row.anomaly else [])


def test_every_row_fires_for_some_state() -> None:
    """No row is dead: each is the first match for at least one state."""
    assert {index for index, _, _ in reachable(ORDER_TRANSITIONS)} == set(range(len(ORDER_TRANSITIONS)))


def test_table_rows_are_consistent() -> None:
    """APPLIED rows move, others stay; anomaly rows name a kind; CONFIRM rows ask a query."""
    for row in ORDER_TRANSITIONS:
        assert (row.outcome is Outcome.APPLIED) == (row.dest is not None), row
        assert (row.outcome is Outcome.ANOMALY) == (row.anomaly is not None), row
        assert (row.outcome is Outcome.CONFIRM) == (ConfirmByQuery() in row.effects and row.dest is None), row
        assert row.dest not in row.sources, row


def test_legal_edges_are_exactly_these() -> None:
    """The audit checker's list of legal edges, spelled out."""
    assert {
        (C, P), (U, P), (C, F), (U, F), (C, U),
        (P, S), (C, S), (U, S), (P, F), (P, X), (C, X), (U, X),
        (U, C), (F, S), (X, S),
    } == LEGAL_ORDER_EDGES  # fmt: skip


def test_terminal_states() -> None:
    """SUCCESS, FAILED and CLOSED are terminal; the rest are not."""
    assert [s for s in OrderState if is_terminal(s)] == [S, F, X]


# -- guards and input-dependent effects


def test_success_hint_asks_for_an_early_query_but_never_makes_success() -> None:
    """A SUCCESS status from /orderAndPay only moves to PENDING and asks for a query."""
    decision = decide(order(C), SubmitAccepted(status_hint="SUCCESS"), now=NOW)
    assert decision.to_state is P
    assert decision.effects == (ConfirmByQuery(),)


def test_success_hint_on_a_stale_answer_does_nothing() -> None:
    """A late acceptance after the order moved on is a plain no-op."""
    decision = decide(order(S), SubmitAccepted(status_hint="SUCCESS"), now=NOW)
    assert (decision.outcome, decision.effects) == (Outcome.NOOP, ())


def test_success_with_a_token_saves_it_for_the_user() -> None:
    """tokenForFutureUse offered and a token reported: SaveToken(user) and token.saved."""
    decision = decide(order(P), report("SUCCESS", has_token=True), now=NOW)
    assert decision.effects == (
        EmitEvent(type="payment.succeeded"),
        SaveToken(user_id="u1"),
        EmitEvent(type="token.saved"),
    )


@pytest.mark.parametrize(("tokenize", "has_token"), [(False, True), (True, False), (False, False)])
def test_no_token_is_saved_without_consent_and_evidence(tokenize: bool, has_token: bool) -> None:
    """A token is saved only when it was offered and the gateway reports one."""
    decision = decide(order(P, tokenize=tokenize), report("SUCCESS", has_token=has_token), now=NOW)
    assert decision.effects == (EmitEvent(type="payment.succeeded"),)


def test_a_duplicate_success_does_not_save_the_token_again() -> None:
    """The token is saved once, on the transition."""
    decision = decide(order(S), report("SUCCESS", has_token=True), now=NOW)
    assert (decision.outcome, decision.effects) == (Outcome.DUPLICATE, ())


@pytest.mark.parametrize(
    ("changes", "trigger"),
    [
        ({"app_id": "OTHER", "currency": "EUR", "amount": Decimal(1)}, "report_app_mismatch"),
        ({"merchant_no": "M2", "currency": "EUR"}, "report_app_mismatch"),
        ({"currency": "EUR", "amount": Decimal(1)}, "report_currency_mismatch"),
        ({"amount": Decimal("9.99")}, "report_amount_mismatch"),
        ({"app_id": None, "merchant_no": None}, "report_success"),
        ({"amount": Decimal("10.000")}, "report_success"),
    ],
)
def test_reports_are_checked_app_then_currency_then_amount(changes: dict[str, object], trigger: str) -> None:
    """The first failed check names the anomaly; absent ids are not checked; equal Decimals match."""
    decision = decide(order(P), report("SUCCESS", Source.POLL, **changes), now=NOW)
    assert decision.trigger == trigger


def test_anomaly_detail_is_short_and_names_the_case() -> None:
    """An anomaly records its kind, a short detail and an anomaly.detected event."""
    decision = decide(order(F), report("SUCCESS", Source.POLL), now=NOW)
    assert decision.effects == (
        RecordAnomaly(kind=AnomalyKind.LATE_SUCCESS, detail="report_success in FAILED via poll"),
        EmitEvent(type="anomaly.detected"),
    )


@pytest.mark.parametrize(
    ("code", "trigger", "state"),
    [
        ("PAYMENT_REJECTED", "submit_rejected", F),
        ("ORDER_REPEAT", "submit_duplicate", U),
        ("SYSTEM_ERROR", "submit_unknown", U),
        ("UNEXPECTED_ERROR", "submit_unknown", U),
        ("REQUEST_TIMEOUT", "submit_unknown", U),
    ],
)
def test_a_refusal_is_a_decline_unless_its_code_leaves_doubt(
    code: str, trigger: str, state: OrderState
) -> None:
    """ORDER_REPEAT and system errors may hide a created order: UNKNOWN and a query, not FAILED."""
    decision = decide(order(U, ledger=FIRST), SubmitRejected(code=code, send_no=1), now=NOW)
    assert (decision.trigger, decision.to_state) == (trigger, None if state is U else state)


@pytest.mark.parametrize(
    ("since_submit", "outcome"),
    [(NOT_FOUND_GRACE - timedelta(microseconds=1), Outcome.NOOP), (NOT_FOUND_GRACE, Outcome.APPLIED)],
)
def test_unknown_not_found_is_resubmitted_after_the_grace(since_submit: timedelta, outcome: Outcome) -> None:
    """An UNKNOWN order the gateway does not know goes back to CREATED once the grace has passed."""
    facts = order(U, created_at=LONG_AGO, last_submit_at=NOW - since_submit)
    decision = decide(facts, GatewayNotFound(), now=NOW)
    assert decision.outcome is outcome
    if outcome is Outcome.APPLIED:
        assert (decision.to_state, decision.effects) == (C, (Resubmit(),))


def test_the_grace_is_a_keyword_and_falls_back_to_created_at() -> None:
    """grace= overrides the constant; without a submit time the creation time counts."""
    facts = order(U, created_at=NOW - timedelta(seconds=5), last_submit_at=None)
    assert decide(facts, GatewayNotFound(), now=NOW).outcome is Outcome.NOOP
    assert decide(facts, GatewayNotFound(), now=NOW, grace=timedelta(seconds=5)).to_state is C


@pytest.mark.parametrize(
    ("age", "outcome"),
    [(NOT_FOUND_ALARM - timedelta(microseconds=1), Outcome.NOOP), (NOT_FOUND_ALARM, Outcome.ANOMALY)],
)
def test_pending_not_found_is_an_anomaly_only_after_the_alarm(age: timedelta, outcome: Outcome) -> None:
    """The gateway accepted a PENDING order, so not-found is eventual consistency until the alarm,
    counted from the last send Checus accepted (not from the order's creation)."""
    facts = order(P, created_at=LONG_AGO, last_submit_at=LONG_AGO, accepted_at=NOW - age)
    assert decide(facts, GatewayNotFound(), now=NOW).outcome is outcome
    assert decide(facts, GatewayNotFound(), now=NOW, alarm=age).outcome is Outcome.ANOMALY


@pytest.mark.parametrize("state", [C, S, F, X])
def test_not_found_never_matters_outside_unknown_and_pending(state: OrderState) -> None:
    """CREATED was never sent; a terminal order is settled: not-found is a no-op."""
    facts = order(state, created_at=LONG_AGO, last_submit_at=LONG_AGO)
    assert decide(facts, GatewayNotFound(), now=NOW).outcome is Outcome.NOOP


def test_operator_turns_a_confirmed_late_success_into_success() -> None:
    """FAILED → SUCCESS by an operator emits payment.succeeded and saves no token."""
    decision = decide(order(F), OperatorResolve(to_state=S, reason="LATE_SUCCESS confirmed"), now=NOW)
    assert (decision.outcome, decision.to_state) == (Outcome.APPLIED, S)
    assert decision.effects == (EmitEvent(type="payment.succeeded"),)


@pytest.mark.parametrize("target", [C, P, U, F, X])
def test_operator_can_never_undo_a_success(target: OrderState) -> None:
    """SUCCESS is never left, not even by an operator."""
    decision = decide(order(S), OperatorResolve(to_state=target, reason="chargeback"), now=NOW)
    assert (decision.outcome, decision.to_state) == (Outcome.REJECTED, None)


# -- impossible input raises


@pytest.mark.parametrize(
    "build",
    [
        lambda: report("REFUND_SUCCESS"),
        lambda: report("SUCCESS", Source.API),
        lambda: report("SUCCESS", amount=10.0),
        lambda: order(P, amount=10.0),
        lambda: order(P, amount=Decimal("NaN")),
        lambda: SubmitAccepted(status_hint="FAILED"),
        lambda: OperatorResolve(to_state=S, reason="  "),
        lambda: EmitEvent(type="payment.refunded"),
    ],
)
def test_impossible_input_raises(build: Callable[[], object]) -> None:
    """Bad values are caller bugs: floats, unknown statuses, sources or event types, blank reasons."""
    with pytest.raises((ValueError, TypeError)):
        build()


def test_decide_never_builds_a_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Machine is built once at import; a decision only fires an event on it."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("Machine built per call")

    monkeypatch.setattr(transitions.Machine, "__init__", refuse)
    assert decide(order(P), report("SUCCESS"), now=NOW).to_state is S


def test_changed_is_true_only_for_a_new_state() -> None:
    """Decision.changed reports whether the record moves."""
    assert decide(order(P), report("SUCCESS"), now=NOW).changed
    assert not decide(order(S), report("SUCCESS"), now=NOW).changed


# -- properties

statuses = st.sampled_from(["PENDING", "SUCCESS", "FAILED", "CLOSED"])
sources = st.sampled_from([Source.NOTIFICATION, Source.POLL])
reports = st.builds(report, statuses, sources, has_token=st.booleans())
events: st.SearchStrategy[OrderEvent] = st.one_of(
    reports,
    st.builds(SubmitAccepted, status_hint=st.sampled_from(["PENDING", "SUCCESS"])),
    st.builds(SubmitRejected, code=st.sampled_from(["PAYMENT_REJECTED", "ORDER_REPEAT", "SYSTEM_ERROR"]),
              send_no=st.integers(min_value=1, max_value=3)),
    st.just(SubmitClaimed()),
    st.just(SubmitUnknown()),
    st.just(SubmitDuplicate()),
    st.just(GatewayNotFound()),
    st.builds(OperatorResolve, to_state=st.sampled_from(list(OrderState)), reason=st.just("ops")),
)


def check_decision(decision: Decision[OrderState]) -> None:
    """Only APPLIED decisions carry a new state, and it differs from the old one."""
    if decision.outcome is Outcome.APPLIED:
        assert decision.to_state is not None
        assert decision.to_state is not decision.from_state
    else:
        assert decision.to_state is None


@given(st.sampled_from(list(OrderState)), st.lists(reports, max_size=12))
def test_reports_only_walk_legal_edges_and_never_leave_a_terminal_state(
    start: OrderState, sequence: list[GatewayReport]
) -> None:
    """Any sequence of reports moves along legal edges only, and a terminal state stays put."""
    facts = order(start)
    for event in sequence:
        decision = decide(facts, event, now=NOW)
        check_decision(decision)
        if decision.to_state is not None:
            assert (facts.state, decision.to_state) in LEGAL_ORDER_EDGES
            assert not is_terminal(facts.state)
            facts = replace(facts, state=decision.to_state)


@given(
    st.sampled_from(list(OrderState)),
    st.lists(
        st.tuples(events, st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2))), max_size=15
    ),
)
def test_any_input_sequence_is_decided_and_success_is_never_left(
    start: OrderState, sequence: list[tuple[OrderEvent, timedelta]]
) -> None:
    """Every input is decided (the table is total); only an operator leaves a terminal state."""
    facts = order(start)
    now = NOW
    for event, step in sequence:
        now += step
        decision = decide(facts, event, now=now)
        check_decision(decision)
        if decision.to_state is None:
            continue
        assert (facts.state, decision.to_state) in LEGAL_ORDER_EDGES
        assert facts.state is not S
        assert not is_terminal(facts.state) or isinstance(event, OperatorResolve)
        facts = replace(facts, state=decision.to_state, last_submit_at=now)
