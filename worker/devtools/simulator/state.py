"""The simulator's memory, readable from any thread.

Writers are the server's event loop (request handlers, timers, notification tasks); readers
are also tests on their own thread, asserting the truth without going through HTTP. One lock
guards every map; records are frozen, so what a reader gets back stays consistent after the
lock is released.

Order keys are case-insensitive (``AAA`` and ``AAa`` are one order, WIRE.md §8.1); refund
and token keys are exact.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from worker.devtools.simulator.records import NotificationAttempt, Order, Refund, Token


@dataclass(slots=True)
class _Tables:
    orders: dict[str, Order] = field(default_factory=dict)
    by_trade_token: dict[str, str] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    attempts: list[NotificationAttempt] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    orders_created: Counter[str] = field(default_factory=Counter)
    refunds_created: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=dict)


class SimulatorState:
    """Orders, refunds, tokens, the notification-attempt log and the effect ledger."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._t = _Tables()

    def clear(self) -> None:
        with self._lock:
            self._t = _Tables()

    # orders

    def order(self, out_trade_no: str) -> Order | None:
        with self._lock:
            return self._t.orders.get(out_trade_no.lower())

    def order_by_trade_token(self, trade_token: str) -> Order | None:
        with self._lock:
            key = self._t.by_trade_token.get(trade_token)
            return self._t.orders.get(key) if key is not None else None

    def orders(self) -> list[Order]:
        with self._lock:
            return list(self._t.orders.values())

    def put_order(self, order: Order) -> None:
        with self._lock:
            key = order.out_trade_no.lower()
            self._t.orders[key] = order
            self._t.by_trade_token[order.trade_token] = key

    # refunds

    def refund(self, out_refund_no: str) -> Refund | None:
        with self._lock:
            return self._t.refunds.get(out_refund_no)

    def refund_by_trade_no(self, refund_trade_no: str) -> Refund | None:
        with self._lock:
            found = [r for r in self._t.refunds.values() if r.refund_trade_no == refund_trade_no]
            return found[0] if found else None

    def refunds_of(self, out_trade_no: str) -> list[Refund]:
        with self._lock:
            key = out_trade_no.lower()
            return [r for r in self._t.refunds.values() if r.out_trade_no.lower() == key]

    def refunds(self) -> list[Refund]:
        with self._lock:
            return list(self._t.refunds.values())

    def put_refund(self, refund: Refund) -> None:
        with self._lock:
            self._t.refunds[refund.out_refund_no] = refund

    # tokens

    def token(self, token_id: str) -> Token | None:
        with self._lock:
            return self._t.tokens.get(token_id)

    def tokens(self, user_id: str | None = None) -> list[Token]:
        with self._lock:
            return [t for t in self._t.tokens.values() if user_id is None or t.user_id == user_id]

    def put_token(self, token: Token) -> None:
        with self._lock:
            self._t.tokens[token.token_id] = token

    # notifications

    def record_attempt(self, attempt: NotificationAttempt) -> NotificationAttempt:
        """Append to the log; the log numbers attempts (ids count from 1)."""
        with self._lock:
            numbered = replace(attempt, id=len(self._t.attempts) + 1)
            self._t.attempts.append(numbered)
            return numbered

    def attempts(self, key: str | None = None, kind: str | None = None) -> list[NotificationAttempt]:
        """The attempt log in sending order, optionally for one outTradeNo/outRefundNo."""
        with self._lock:
            return [a for a in self._t.attempts if (key is None or a.key == key) and (kind is None or a.kind == kind)]

    def record_dropped(self, kind: str, key: str) -> None:
        with self._lock:
            self._t.dropped.append({"kind": kind, "key": key})

    def dropped(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(d) for d in self._t.dropped]

    # ledger

    def count_call(self, endpoint: str) -> None:
        with self._lock:
            self._t.calls[endpoint] += 1

    def count_code(self, endpoint: str, code: str) -> None:
        with self._lock:
            self._t.codes.setdefault(endpoint, Counter())[code] += 1

    def count_order_created(self, out_trade_no: str) -> None:
        with self._lock:
            self._t.orders_created[out_trade_no] += 1

    def count_refund_created(self, out_refund_no: str) -> None:
        with self._lock:
            self._t.refunds_created[out_refund_no] += 1

    def ledger(self) -> dict[str, Any]:
        """Effect counts for double-effect checks: creations per key, calls per endpoint."""
        with self._lock:
            return {
                "orders": dict(self._t.orders_created),
                "refunds": dict(self._t.refunds_created),
                "calls": dict(self._t.calls),
                "codes": {name: dict(codes) for name, codes in self._t.codes.items()},
            }
