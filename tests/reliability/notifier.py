"""Checus's SUCCESS notifications for a list of paid orders, posted one by one and answered as recorded.

The outage tests (Redis killed, Redis failed over, PostgreSQL crashed) all post fresh facts while a
dependency is gone and judge the receiver by what it answered when: this is that one sequence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from .cluster import Cluster


@dataclass(frozen=True, slots=True)
class Answer:
    ref: str
    sent: float  # time.monotonic()
    answered: float
    status: int | None  # None: no answer came


class PaymentNotifier:
    def __init__(self, cluster: Cluster, numbers: Iterable[str], amount: Decimal) -> None:
        self.cluster, self.amount = cluster, amount
        self._facts = iter(numbers)
        self._lock = threading.Lock()
        self.answers: list[Answer] = []

    def next(self) -> int | None:
        """Post the next order's SUCCESS notification; its HTTP status, None without an answer."""
        with self._lock:
            no = next(self._facts)
        body, sign = self.cluster.signed_notification({
            "outTradeNo": no, "tradeToken": "T0", "totalAmount": self.amount, "currency": "USD",
            "status": "SUCCESS", "paymentDetails": []})
        sent = time.monotonic()
        status = self.cluster.post_notification("/checus/notify/payment", body, sign, timeout=20)
        with self._lock:
            self.answers.append(Answer(no, sent, time.monotonic(), status))
        return status

    def acked(self) -> list[str]:
        return [a.ref for a in self.answers if a.status == 200]
