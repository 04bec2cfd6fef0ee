"""The money rules of sending, stated on their own and checked against the machines' public ``decide``.

These tests never read the transition tables: each states a rule of the product in its own words
(an expectation written here, not taken from a table row) and checks it over many inputs. A table
edit that breaks a rule fails here, whatever the table says about itself.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from statemachine import (
    DEFINITIVE_CODES,
    KNOWN_CODES,
    MAX_RETRY_LATER,
    NOT_FOUND_ALARM,
    NOT_FOUND_GRACE,
    RETRY_LATER_CODES,
    Answer,
    ConfirmByQuery,
    EmitEvent,
    GatewayNotFound,
    OrderFacts,
    OrderState,
    Outcome,
    RefundFacts,
    RefundNotFound,
    RefundState,
    RefundSubmitClaimed,
    RefundSubmitDuplicate,
    RefundSubmitRejected,
    RefundSubmitUnknown,
    Resubmit,
    SendLedger,
    SubmitAccepted,
    SubmitClaimed,
    SubmitDuplicate,
    SubmitRejected,
    SubmitUnknown,
    decide,
    decide_refund,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORDER_FINAL = {OrderState.SUCCESS, OrderState.FAILED, OrderState.CLOSED}
REFUND_FINAL = {RefundState.REFUND_SUCCESS, RefundState.REFUND_FAILED}
# Written out here on purpose (not imported): the refusals WIRE.md §7 documents as "no effect".
SOME_DEFINITIVE = ["PARAMS_INVALID", "PAYMENT_REJECTED", "ISSUER_PAYMENT_REJECTED", "AMOUNT_INVALID",
                   "CURRENCY_INVALID", "MERCHANT_INVALID", "CARD_INVALID", "ORDER_CLOSED"]
UNCERTAIN = ["SYSTEM_ERROR", "UNEXPECTED_ERROR", "REQUEST_TIMEOUT"]


def order(state: OrderState, ledger: SendLedger, **changes: object) -> OrderFacts:
    base = OrderFacts(state=state, amount=Decimal("10.00"), currency="USD", app_id="A", merchant_no="M",
                      user_id="u", tokenize=False, created_at=NOW - timedelta(days=1), last_submit_at=NOW,
                      ledger=ledger)
    return replace(base, **changes)  # type: ignore[arg-type]


def refund(state: RefundState, ledger: SendLedger, **changes: object) -> RefundFacts:
    base = RefundFacts(state=state, amount=Decimal("4.00"), currency="USD", out_trade_no="T",
                       created_at=NOW - timedelta(days=1), last_submit_at=NOW, ledger=ledger)
    return replace(base, **changes)  # type: ignore[arg-type]


codes = st.one_of(st.sampled_from(sorted(KNOWN_CODES)), st.text(min_size=0, max_size=24))


@st.composite
def ledgers_in_doubt(draw: st.DrawFn) -> tuple[SendLedger, int]:
    """A ledger where some earlier send's answer was never read, and the send being answered."""
    sends = draw(st.integers(min_value=2, max_value=12))
    clean = draw(st.integers(min_value=0, max_value=sends - 2))
    return SendLedger(sends=sends, clean=clean), sends


@st.composite
def any_send(draw: st.DrawFn) -> tuple[SendLedger, int]:
    """Any ledger and the number of a send it has made (the latest or an older one)."""
    sends = draw(st.integers(min_value=1, max_value=12))
    clean = draw(st.integers(min_value=0, max_value=sends))
    return SendLedger(sends=sends, clean=clean), draw(st.integers(min_value=1, max_value=sends))


# -- a refusal of a resend is never proof that the first send failed


@given(ledgers_in_doubt(), codes)
def test_no_refusal_ends_an_order_after_a_send_whose_outcome_is_unknown(sent: tuple[SendLedger, int], code: str
                                                                        ) -> None:
    """Once any earlier send's answer was never read, no refusal, of any code, fails the order: it asks a query."""
    ledger, send_no = sent
    decision = decide(order(OrderState.UNKNOWN, ledger), SubmitRejected(code=code, send_no=send_no), now=NOW)
    assert decision.to_state is None
    assert ConfirmByQuery() in decision.effects


@given(ledgers_in_doubt(), codes)
def test_no_refusal_ends_a_refund_after_a_send_whose_outcome_is_unknown(sent: tuple[SendLedger, int], code: str
                                                                        ) -> None:
    """The same for refunds: the balance is not freed on a guess, whatever the code."""
    ledger, send_no = sent
    event = RefundSubmitRejected(code=code, send_no=send_no)
    decision = decide_refund(refund(RefundState.UNKNOWN, ledger), event, now=NOW, refundable_if_applied=None)
    assert decision.to_state not in REFUND_FINAL | {RefundState.CREATED}
    assert ConfirmByQuery() in decision.effects


@given(any_send(), st.sampled_from(list(OrderState)))
def test_order_repeat_never_ends_an_order(sent: tuple[SendLedger, int], state: OrderState) -> None:
    """ORDER_REPEAT says the number exists at Checus: it never makes an order final, from any state."""
    ledger, send_no = sent
    for event in (SubmitDuplicate(), SubmitRejected(code="ORDER_REPEAT", send_no=send_no)):
        decision = decide(order(state, ledger), event, now=NOW)
        assert decision.to_state not in ORDER_FINAL


@given(any_send(), st.sampled_from(list(RefundState)))
def test_order_repeat_never_ends_a_refund(sent: tuple[SendLedger, int], state: RefundState) -> None:
    """Likewise for a repeated outRefundNo."""
    ledger, send_no = sent
    for event in (RefundSubmitDuplicate(), RefundSubmitRejected(code="ORDER_REPEAT", send_no=send_no)):
        decision = decide_refund(refund(state, ledger), event, now=NOW, refundable_if_applied=None)
        assert decision.to_state not in REFUND_FINAL


@given(any_send(), st.text(min_size=0, max_size=32))
def test_a_code_we_do_not_know_is_never_a_refusal(sent: tuple[SendLedger, int], code: str) -> None:
    """A code outside WIRE.md's list (an empty one included) is an unknown outcome: nothing becomes final."""
    assume(code not in DEFINITIVE_CODES)
    ledger, send_no = sent
    assert decide(order(OrderState.UNKNOWN, ledger), SubmitRejected(code=code, send_no=send_no),
                  now=NOW).to_state is None
    event = RefundSubmitRejected(code=code, send_no=send_no)
    decided = decide_refund(refund(RefundState.UNKNOWN, ledger), event, now=NOW, refundable_if_applied=None)
    assert decided.to_state is None or code in RETRY_LATER_CODES


@pytest.mark.parametrize("code", UNCERTAIN)
def test_the_gateways_own_trouble_is_an_unknown_outcome_even_on_a_first_send(code: str) -> None:
    """SYSTEM_ERROR and its kin may hide a charge: a first send so answered stays UNKNOWN and is queried."""
    decision = decide(order(OrderState.UNKNOWN, SendLedger(sends=1)), SubmitRejected(code=code, send_no=1), now=NOW)
    assert (decision.to_state, decision.effects) == (None, (ConfirmByQuery(),))


@pytest.mark.parametrize("code", SOME_DEFINITIVE)
def test_a_first_send_refused_definitively_fails_the_order(code: str) -> None:
    """The one case a refusal is final: the first send, and Checus says no with a documented code."""
    decision = decide(order(OrderState.UNKNOWN, SendLedger(sends=1)), SubmitRejected(code=code, send_no=1), now=NOW)
    assert decision.to_state is OrderState.FAILED
    assert EmitEvent(type="payment.failed") in decision.effects


def test_a_resend_after_sends_refused_definitively_may_still_be_refused_for_good() -> None:
    """Earlier sends that Checus refused (known: no effect) leave no doubt: the next refusal is final."""
    ledger = SendLedger(sends=3, clean=2)
    decision = decide(order(OrderState.UNKNOWN, ledger), SubmitRejected(code="PARAMS_INVALID", send_no=3), now=NOW)
    assert decision.to_state is OrderState.FAILED


@given(any_send(), codes)
def test_a_late_answer_to_an_older_send_never_ends_a_record(sent: tuple[SendLedger, int], code: str) -> None:
    """The answer to send n, arriving after send n+1 was claimed, says nothing final about the record."""
    ledger, send_no = sent
    assume(send_no < ledger.sends)
    assert decide(order(OrderState.UNKNOWN, ledger), SubmitRejected(code=code, send_no=send_no),
                  now=NOW).to_state is None


# -- an outcome we cannot read is resolved by query, never guessed


@given(st.sampled_from([OrderState.CREATED, OrderState.UNKNOWN, OrderState.PENDING]), any_send())
def test_an_unknown_outcome_never_makes_an_order_final(state: OrderState, sent: tuple[SendLedger, int]) -> None:
    """Timeouts, resets, 5xx, unreadable answers: never FAILED, never SUCCESS."""
    decision = decide(order(state, sent[0]), SubmitUnknown(), now=NOW)
    assert decision.to_state not in ORDER_FINAL


def test_a_synchronous_success_is_only_a_hint() -> None:
    """APPLY_SUCCESS with status SUCCESS makes the order PENDING and asks a query; never SUCCESS."""
    decision = decide(order(OrderState.UNKNOWN, SendLedger(sends=1)), SubmitAccepted(status_hint="SUCCESS"), now=NOW)
    assert decision.to_state is OrderState.PENDING
    assert ConfirmByQuery() in decision.effects


# -- one sender per record


@pytest.mark.parametrize("state", list(OrderState))
def test_only_a_created_order_may_be_sent(state: OrderState) -> None:
    """A send is claimed from CREATED only; from any other state the claim is refused and nothing moves."""
    decision = decide(order(state, SendLedger(sends=1)), SubmitClaimed(), now=NOW)
    if state is OrderState.CREATED:
        assert decision.to_state is OrderState.UNKNOWN
    else:
        assert (decision.outcome, decision.to_state) == (Outcome.REJECTED, None)


@pytest.mark.parametrize("state", list(RefundState))
@pytest.mark.parametrize("slot_free", [True, False])
def test_a_refund_is_sent_only_when_created_and_its_orders_slot_is_free(state: RefundState, slot_free: bool) -> None:
    """Checus allows one refund in progress per order: a refund waits while another one is in progress."""
    decision = decide_refund(refund(state, SendLedger()), RefundSubmitClaimed(slot_free=slot_free), now=NOW,
                             refundable_if_applied=None)
    moved = state is RefundState.CREATED and slot_free
    assert decision.to_state is (RefundState.UNKNOWN if moved else None)


# -- "not now" is retried, then given up, never guessed


@pytest.mark.parametrize("code", sorted(RETRY_LATER_CODES))
def test_not_now_waits_and_is_given_up_only_after_the_cap(code: str) -> None:
    """Each "not now" answer (all known to have had no effect) puts the refund back to wait; the last allowed
    one gives it up, with an anomaly for an operator."""
    for send_no in range(1, MAX_RETRY_LATER + 1):
        ledger = SendLedger(sends=send_no, clean=send_no - 1)
        decision = decide_refund(refund(RefundState.UNKNOWN, ledger), RefundSubmitRejected(code=code, send_no=send_no),
                                 now=NOW, refundable_if_applied=None)
        if send_no < MAX_RETRY_LATER:
            assert decision.to_state is RefundState.CREATED, send_no
        else:
            assert decision.to_state is RefundState.REFUND_FAILED
            assert EmitEvent(type="anomaly.detected") in decision.effects


# -- ORDER_NOT_EXIST: resolved by query, in bounded time


def _not_found_order(ledger: SendLedger, since: timedelta, **changes: object) -> OrderState | None:
    facts = order(OrderState.UNKNOWN, ledger, last_submit_at=NOW - since, **changes)
    return decide(facts, GatewayNotFound(), now=NOW).to_state


def test_not_found_within_the_grace_changes_nothing() -> None:
    """Right after a send, Checus may not show the order yet: nothing moves, nothing is sent again."""
    for answer in (None, *Answer):
        ledger = SendLedger(sends=1, clean=int(answer in (Answer.REJECTED, Answer.RETRY_LATER)), last_answer=answer)
        assert _not_found_order(ledger, NOT_FOUND_GRACE - timedelta(seconds=1)) is None


@pytest.mark.parametrize("answer", [None, Answer.UNKNOWN])
def test_a_send_lost_on_the_way_is_sent_again_past_the_grace(answer: Answer | None) -> None:
    """An unanswered (or unreadable) send Checus never heard of is sent again with the same number."""
    facts = order(OrderState.UNKNOWN, SendLedger(sends=1, last_answer=answer), last_submit_at=NOW - NOT_FOUND_GRACE)
    decision = decide(facts, GatewayNotFound(), now=NOW)
    assert (decision.to_state, Resubmit() in decision.effects) == (OrderState.CREATED, True)


def test_a_refused_send_is_neither_sent_again_nor_failed_until_the_alarm() -> None:
    """The latest send refused and an earlier one in doubt: Checus's query may still find the earlier one,
    so not-found changes nothing (and sends nothing) until the alarm; then nothing was taken: FAILED."""
    ledger = SendLedger(sends=2, clean=1, last_answer=Answer.REJECTED)
    for since in (NOT_FOUND_GRACE, NOT_FOUND_ALARM - timedelta(seconds=1)):
        facts = order(OrderState.UNKNOWN, ledger, last_submit_at=NOW - since)
        decision = decide(facts, GatewayNotFound(), now=NOW)
        assert (decision.to_state, Resubmit() in decision.effects) == (None, False), since
    assert _not_found_order(ledger, NOT_FOUND_ALARM) is OrderState.FAILED


def test_after_order_repeat_not_found_is_never_answered_by_sending_again() -> None:
    """Checus said the number exists; its query saying otherwise is an anomaly (after the alarm), not a resend."""
    ledger = SendLedger(sends=2, clean=0, last_answer=Answer.REPEAT)
    facts = order(OrderState.UNKNOWN, ledger, last_submit_at=NOW - NOT_FOUND_ALARM, accepted_at=NOW - NOT_FOUND_ALARM)
    decision = decide(facts, GatewayNotFound(), now=NOW)
    assert decision.to_state is None and Resubmit() not in decision.effects
    assert decision.outcome is Outcome.ANOMALY


def test_the_not_found_alarm_counts_from_the_last_accepted_send() -> None:
    """An old order resent and accepted a moment ago is not an anomaly when Checus does not show it yet."""
    facts = order(OrderState.PENDING, SendLedger(sends=2, last_answer=Answer.ACCEPTED),
                  created_at=NOW - timedelta(days=3), last_submit_at=NOW, accepted_at=NOW - timedelta(seconds=1))
    assert decide(facts, GatewayNotFound(), now=NOW).outcome is Outcome.NOOP


def test_a_refund_not_found_is_resolved_like_an_order() -> None:
    """Lost on the way: sent again past the grace; refused: failed past the alarm; nothing within the grace."""
    lost = refund(RefundState.UNKNOWN, SendLedger(sends=1), last_submit_at=NOW - NOT_FOUND_GRACE)
    refused = replace(lost, ledger=SendLedger(sends=2, clean=1, last_answer=Answer.REJECTED),
                      last_submit_at=NOW - NOT_FOUND_ALARM)
    fresh = replace(lost, last_submit_at=NOW)
    assert decide_refund(lost, RefundNotFound(), now=NOW, refundable_if_applied=None).to_state is RefundState.CREATED
    assert decide_refund(refused, RefundNotFound(), now=NOW,
                         refundable_if_applied=None).to_state is RefundState.REFUND_FAILED
    assert decide_refund(fresh, RefundNotFound(), now=NOW, refundable_if_applied=None).to_state is None


@given(st.sampled_from(list(RefundState)))
def test_an_unknown_refund_outcome_never_frees_the_balance(state: RefundState) -> None:
    """A refund whose answer we could not read is never REFUND_FAILED (which would free its amount)."""
    decision = decide_refund(refund(state, SendLedger(sends=1)), RefundSubmitUnknown(), now=NOW,
                             refundable_if_applied=None)
    assert decision.to_state is not RefundState.REFUND_FAILED
