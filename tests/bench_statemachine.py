"""Prints microseconds per decision for the order and refund machines (a benchmark, not a test).

Run: python tests/bench_statemachine.py
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from statemachine import (
    GatewayReport,
    OrderFacts,
    OrderState,
    RefundFacts,
    RefundReport,
    RefundState,
    Source,
    SubmitAccepted,
    decide,
    decide_refund,
)

NOW = datetime(2024, 5, 1, tzinfo=UTC)
ORDER = OrderFacts(
    state=OrderState.PENDING,
    amount=Decimal("10.00"),
    currency="USD",
    app_id="APP",
    merchant_no="M1",
    user_id="u1",
    tokenize=True,
    created_at=NOW,
)
PAID = GatewayReport(status="SUCCESS", amount=Decimal("10.00"), currency="USD", source=Source.NOTIFICATION)
LATE = GatewayReport(status="SUCCESS", amount=Decimal("10.00"), currency="USD", source=Source.POLL)
FAILED = replace(ORDER, state=OrderState.FAILED)
CREATED = replace(ORDER, state=OrderState.CREATED)
ACCEPTED = SubmitAccepted()
REFUND = RefundFacts(
    state=RefundState.REFUND_PENDING,
    amount=Decimal("4.00"),
    currency="USD",
    out_trade_no="T1",
    created_at=NOW,
)
REFUNDED = RefundReport(
    status="REFUND_SUCCESS", amount=Decimal("4.00"), currency="USD", source=Source.NOTIFICATION
)

CASES: dict[str, Callable[[], object]] = {
    "order PENDING + SUCCESS report (applied)": lambda: decide(ORDER, PAID, now=NOW),
    "order FAILED + SUCCESS poll (anomaly)": lambda: decide(FAILED, LATE, now=NOW),
    "order CREATED + submit accepted": lambda: decide(CREATED, ACCEPTED, now=NOW),
    "refund PENDING + SUCCESS report": lambda: decide_refund(
        REFUND, REFUNDED, now=NOW, refundable_if_applied=Decimal("6.00")
    ),
}


def main() -> None:
    """Time each case and print the best µs per call of five runs."""
    for name, call in CASES.items():
        runs = 20_000
        best = min(timeit.repeat(call, number=runs, repeat=5)) / runs
        print(f"{best * 1e6:7.1f} µs/decision  {name}")  # noqa: T201 — a benchmark prints


if __name__ == "__main__":
    main()
