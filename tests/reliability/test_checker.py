"""The checker catches what it is there to catch: each violation planted in an otherwise clean snapshot."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from .checker import InboxRow, OrderRow, OutboxRow, RefundRow, Snapshot, Step, check
from .sinks import Delivery

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(event_id: str, type_: str, ref_key: str, ref: str) -> tuple[OutboxRow, Delivery]:
    body = {"event_id": event_id, "type": type_, ref_key: ref}
    return (OutboxRow(event_id, type_, ref, True, body),
            Delivery(event_id, type_, json.dumps(body, sort_keys=True, separators=(",", ":")), 0.0))


def clean() -> Snapshot:
    """One paid order with one successful refund, everything consistent."""
    paid, refunded = event("payment.succeeded:order:O1:3", "payment.succeeded", "order_ref", "O1"), \
        event("refund.succeeded:refund:R1:3", "refund.succeeded", "refund_ref", "R1")
    return Snapshot(
        orders=[OrderRow(1, "O1", "SUCCESS", 3, Decimal("10.00"), "USD")],
        refunds=[RefundRow(1, "R1", 1, "REFUND_SUCCESS", 3, Decimal("4.00"), at(3))],
        steps=[Step("order", 1, 2, "CREATED", "PENDING", "submit_accepted", "api", at(0), 1),
               Step("order", 1, 3, "PENDING", "SUCCESS", "report_success", "notification", at(2), 2),
               Step("refund", 1, 2, "CREATED", "REFUND_PENDING", "submit_pending", "api", at(4), 3),
               Step("refund", 1, 3, "REFUND_PENDING", "REFUND_SUCCESS", "report_success", "poll", at(5), 4)],
        inbox=[InboxRow(1, "payment", "O1", True, "applied")],
        outbox=[paid[0], refunded[0]],
        anomalies=[],
        truth_orders={"O1": {"outTradeNo": "O1", "status": "SUCCESS"}},
        truth_refunds={"R1": {"outRefundNo": "R1", "status": "REFUND_SUCCESS", "refundAmount": Decimal("4.00")}},
        ledger={"orders": {"O1": 1}, "refunds": {"R1": 1}},
        attempts=[{"kind": "payment", "key": "O1", "acked": True}],
        dropped=[],
        deliveries=[paid[1], refunded[1], paid[1]],  # a repeat with the same id is allowed
    )


def test_a_clean_run_passes() -> None:
    report = check(clean())
    assert report.ok, report.summary()
    assert report.figures["final_states_equal_pct"] == 100.0 and report.figures["event_repeats_same_id"] == 1


def _category(snap: Snapshot, **kwargs: object) -> set[str]:
    report = check(snap, **kwargs)  # type: ignore[arg-type]
    assert not report.ok
    return set(report.figures["violations_by_category"])


def test_an_acknowledged_notification_never_processed_is_lost() -> None:
    snap = clean()
    snap.inbox = [InboxRow(1, "payment", "O1", False, None)]
    assert _category(snap) == {"lost"}
    snap.inbox = []
    assert _category(snap) == {"lost"}


@pytest.mark.parametrize("steps", [
    [1, 3],  # a gap in versions
    [0, 1, 1],  # the same version twice
], ids=["gap", "duplicate"])
def test_a_history_that_is_not_contiguous_is_illegal(steps: list[int]) -> None:
    snap = clean()
    order_steps = [s for s in snap.steps if s.entity == "order"]
    snap.steps = [order_steps[i % 2] for i in steps] + [s for s in snap.steps if s.entity == "refund"]
    assert "illegal" in _category(snap)


def test_an_edge_outside_the_table_or_out_of_a_final_state_is_illegal() -> None:
    snap = clean()
    snap.orders = [replace(snap.orders[0], state="FAILED", version=4)]
    snap.truth_orders["O1"]["status"] = "FAILED"
    snap.steps.append(Step("order", 1, 4, "SUCCESS", "FAILED", "report_failed", "notification", at(9), 9))
    assert "illegal" in _category(snap)


def test_a_state_that_goes_backwards_is_illegal() -> None:
    snap = clean()
    snap.orders = [replace(snap.orders[0], state="PENDING", version=4)]
    snap.truth_orders["O1"]["status"] = "PENDING"
    snap.steps.append(Step("order", 1, 4, "SUCCESS", "PENDING", "report_pending", "poll", at(9), 9))
    assert "illegal" in _category(snap)


def test_refunds_above_paid_are_caught_now_and_in_the_past() -> None:
    snap = clean()
    snap.refunds = [replace(snap.refunds[0], amount=Decimal("10.01"))]
    snap.truth_refunds["R1"]["refundAmount"] = Decimal("10.01")
    assert "money" in _category(snap)
    snap = clean()  # a second refund that failed in the end, but was committed alongside the first
    snap.refunds.append(RefundRow(2, "R2", 1, "REFUND_FAILED", 3, Decimal("7.00"), at(3.5)))
    snap.steps += [Step("refund", 2, 2, "CREATED", "UNKNOWN", "submit_unknown", "api", at(4.5), 5),
                   Step("refund", 2, 3, "UNKNOWN", "REFUND_FAILED", "report_failed", "poll", at(6), 6)]
    snap.truth_refunds["R2"] = {"outRefundNo": "R2", "status": "REFUND_FAILED", "refundAmount": Decimal("7.00")}
    snap.ledger["refunds"]["R2"] = 1
    snap.outbox.append(event("refund.failed:refund:R2:3", "refund.failed", "refund_ref", "R2")[0])
    snap.deliveries.append(event("refund.failed:refund:R2:3", "refund.failed", "refund_ref", "R2")[1])
    assert _category(snap) == {"money"}


def test_a_final_state_other_than_the_gateways_is_caught_unless_held_for_an_operator() -> None:
    snap = clean()
    snap.truth_orders["O1"]["status"] = "FAILED"
    assert _category(snap) == {"truth"}
    snap.anomalies = [("O1", "success_contradicted")]
    assert check(snap, contradicted={"O1"}).ok
    assert "anomaly" in _category(snap)  # not expected by the scenario


def test_an_effect_twice_at_the_gateway_is_caught() -> None:
    snap = clean()
    snap.ledger["refunds"]["R1"] = 2
    assert _category(snap) == {"twice"}


def test_events_lost_or_done_twice_are_caught() -> None:
    snap = clean()
    snap.deliveries = [d for d in snap.deliveries if d.type != "refund.succeeded"]
    assert _category(snap) == {"lost"}
    snap = clean()
    snap.outbox[0] = replace(snap.outbox[0], delivered=False)
    assert _category(snap) == {"lost"}
    snap = clean()
    snap.deliveries.append(replace(snap.deliveries[0], body="{}"))
    assert _category(snap) == {"twice"}
    snap = clean()
    second = event("payment.succeeded:order:O1:4", "payment.succeeded", "order_ref", "O1")
    snap.outbox.append(second[0])
    snap.deliveries.append(second[1])
    assert _category(snap) == {"twice"}  # fulfilled twice: two distinct ids for one payment


def test_only_the_injected_anomalies_are_allowed() -> None:
    snap = clean()
    snap.anomalies = [("O1", "amount_mismatch")]
    assert _category(snap) == {"anomaly"}
    assert check(snap, expected_anomalies=Counter({"amount_mismatch": 1})).ok


def test_failed_and_closed_are_one_outcome_when_the_gateway_changed_between_them() -> None:
    """orders.py rule 6: FAILED after CLOSED (or the reverse) is a duplicate; the first one stays."""
    snap = clean()
    snap.refunds, snap.truth_refunds, snap.ledger["refunds"] = [], {}, {}
    snap.steps = [s for s in snap.steps if s.entity == "order"]
    snap.steps[-1] = replace(snap.steps[-1], to_state="CLOSED", trigger="report_closed")
    snap.orders = [replace(snap.orders[0], state="CLOSED")]
    closed = event("payment.closed:order:O1:3", "payment.closed", "order_ref", "O1")
    snap.outbox, snap.deliveries = [closed[0]], [closed[1]]
    snap.truth_orders["O1"]["status"] = "FAILED"
    assert _category(snap) == {"truth"}
    assert check(snap, contradicted={"O1"}).ok
