"""The checker: run once the system is quiet, it compares the store with the gateway's truth.

It reads a ``Snapshot`` (the store's tables, the simulator's truth, effect ledger and
notification-attempt log, and what the event consumer received) and reports every violation of:

- **lost**: every acknowledged notification has an inbox row, and every such row is processed;
  every record's final state equals the simulator's (a record the gateway never saw must have
  been refused by it);
- **done twice**: one creation per outTradeNo and per outRefundNo in the simulator's ledger; one
  terminal event per record (``payment.succeeded`` is the fulfilment trigger) and none of a
  contradicting kind; every outbox event received by the consumer, repeats only with the same id
  and the same body;
- **illegal**: each record's audit history is contiguous in version, chains from CREATED to the
  current state, and uses only the tables' edges; nothing leaves a terminal state except an operator;
- **money**: Σ successful refunds ≤ paid, and Σ(created + pending + unknown + successful) ≤ paid
  at every point of the history reconstructed from the audit rows; refunds only on paid orders;
- **anomalies**: exactly the kinds the scenario injected.

``scope`` limits the check to some outTradeNos (a test cell, a model run) on a shared store.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from statemachine import LEGAL_ORDER_EDGES, LEGAL_REFUND_EDGES
from worker.gateway.money import from_minor
from worker.store.db import read
from worker.store.schema import anomalies, inbox, orders, outbox, refunds, transitions

from .simctl import SimControl
from .sinks import Delivery

ORDER_TERMINAL = frozenset({"SUCCESS", "FAILED", "CLOSED"})
REFUND_TERMINAL = frozenset({"REFUND_SUCCESS", "REFUND_FAILED"})
COMMITTED = frozenset({"CREATED", "REFUND_PENDING", "UNKNOWN", "REFUND_SUCCESS"})
ORDER_EVENTS = {"SUCCESS": "payment.succeeded", "FAILED": "payment.failed", "CLOSED": "payment.closed"}
REFUND_EVENTS = {"REFUND_SUCCESS": "refund.succeeded", "REFUND_FAILED": "refund.failed"}
ORDER_CONTRADICTIONS = frozenset({"success_contradicted", "late_success"})
UNPAID = frozenset({"FAILED", "CLOSED"})
REFUND_CONTRADICTIONS = frozenset({"refund_contradicted"})
_ORDER_EDGES = frozenset((str(a), str(b)) for a, b in LEGAL_ORDER_EDGES)
_REFUND_EDGES = frozenset((str(a), str(b)) for a, b in LEGAL_REFUND_EDGES)


@dataclass(frozen=True, slots=True)
class OrderRow:
    id: int
    out_trade_no: str
    state: str
    version: int
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class RefundRow:
    id: int
    out_refund_no: str
    order_id: int
    state: str
    version: int
    amount: Decimal
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Step:
    """One audit row."""

    entity: str
    entity_id: int
    version: int
    from_state: str | None
    to_state: str
    trigger: str
    source: str
    at: datetime
    seq: int  # the row id: commit order within one store


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    kind: str
    ref: str
    processed: bool
    outcome: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    event_id: str
    type: str
    ref: str
    delivered: bool
    body: dict[str, Any]


@dataclass
class Snapshot:
    orders: list[OrderRow]
    refunds: list[RefundRow]
    steps: list[Step]
    inbox: list[InboxRow]
    outbox: list[OutboxRow]
    anomalies: list[tuple[str, str]]  # (ref, kind)
    truth_orders: dict[str, dict[str, Any]]  # upper-cased outTradeNo → the simulator's view
    truth_refunds: dict[str, dict[str, Any]]
    ledger: dict[str, Any]
    attempts: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    deliveries: list[Delivery]


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, category: str, message: str) -> None:
        self.violations.append(f"[{category}] {message}")
        counts = self.figures.setdefault("violations_by_category", {})
        counts[category] = counts.get(category, 0) + 1

    def count(self, category: str) -> int:
        return int(self.figures.get("violations_by_category", {}).get(category, 0))

    def summary(self, limit: int = 25) -> str:
        head = "; ".join(self.violations[:limit])
        more = f" (+{len(self.violations) - limit} more)" if len(self.violations) > limit else ""
        return f"{len(self.violations)} violation(s): {head}{more}" if self.violations else "no violations"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"ok": self.ok, "figures": self.figures, "violations": self.violations},
                                   indent=2, sort_keys=True, default=str))


# -- loading ---------------------------------------------------------------------------------

def load_snapshot(engine: Engine, sim: SimControl, deliveries: Iterable[Delivery]) -> Snapshot:
    with read(engine) as conn:
        order_rows = [OrderRow(r.id, r.out_trade_no, r.state, r.version, from_minor(r.amount_minor, r.currency),
                               r.currency) for r in conn.execute(sa.select(orders))]
        currency = {o.id: o.currency for o in order_rows}
        refund_rows = [RefundRow(r.id, r.out_refund_no, r.order_id, r.state, r.version,
                                 from_minor(r.amount_minor, currency.get(r.order_id, r.currency)), r.created_at)
                       for r in conn.execute(sa.select(refunds))]
        steps = [Step(r.entity, r.entity_id, r.version, r.from_state, r.to_state, r.trigger, r.source, r.at, r.id)
                 for r in conn.execute(sa.select(transitions).order_by(transitions.c.id))]
        inbox_rows = [InboxRow(r.id, r.kind, r.ref, r.processed_at is not None, r.outcome)
                      for r in conn.execute(sa.select(inbox.c.id, inbox.c.kind, inbox.c.ref, inbox.c.processed_at,
                                                      inbox.c.outcome))]
        outbox_rows = []
        for r in conn.execute(sa.select(outbox)):
            body = json.loads(r.payload)
            ref = str(body.get("order_ref") or body.get("refund_ref") or "")
            outbox_rows.append(OutboxRow(r.event_id, r.type, ref, r.delivered_at is not None, body))
        anomaly_rows = [(str(r.ref), str(r.kind)) for r in conn.execute(sa.select(anomalies.c.ref, anomalies.c.kind))]
    truth_orders: dict[str, dict[str, Any]] = {}
    truth_refunds: dict[str, dict[str, Any]] = {}
    for order in sim.orders():
        truth_orders[str(order["outTradeNo"]).upper()] = order
        for refund in order.get("refunds", []):
            truth_refunds[str(refund["outRefundNo"])] = refund
    notes = sim.notifications()
    return Snapshot(order_rows, refund_rows, steps, inbox_rows, outbox_rows, anomaly_rows, truth_orders,
                    truth_refunds, sim.ledger(), list(notes["attempts"]), list(notes["dropped"]), list(deliveries))


# -- checking --------------------------------------------------------------------------------

class _Scope:
    def __init__(self, snap: Snapshot, scope: set[str] | None) -> None:
        upper = {s.upper() for s in scope} if scope is not None else None
        self.orders = [o for o in snap.orders if upper is None or o.out_trade_no.upper() in upper]
        ids = {o.id for o in self.orders}
        self.refunds = [r for r in snap.refunds if r.order_id in ids]
        self.order_nos = {o.out_trade_no.upper() for o in self.orders}
        self.refund_nos = {r.out_refund_no for r in self.refunds}
        self.everything = scope is None

    def ref(self, kind: str, ref: str) -> bool:
        if self.everything:
            return True
        return ref.upper() in self.order_nos if kind in ("payment", "order") else ref in self.refund_nos


def check(snap: Snapshot, *, scope: set[str] | None = None, expected_anomalies: Counter[str] | None = None,
          expect_terminal: bool = True, contradicted: set[str] | None = None) -> Report:
    """Every check of the module docstring; ``expect_terminal`` also demands that nothing is left open.

    ``contradicted``: records the scenario made the gateway contradict (forced a second final status).
    Whether that shows as an anomaly depends on what the worker saw first, so instead of an exact
    count, contradiction anomalies are allowed on those records and nowhere else.
    """
    report = Report()
    within = _Scope(snap, scope)
    _check_notifications(snap, within, report)
    _check_histories(snap, within, report)
    _check_money(snap, within, report)
    _check_truth(snap, within, report, expect_terminal, contradicted or set())
    _check_ledger(snap, within, report)
    _check_events(snap, within, report)
    _check_anomalies(snap, within, report, expected_anomalies or Counter(), contradicted)
    report.figures.update({
        "orders": len(within.orders), "refunds": len(within.refunds),
        "order_states": dict(Counter(o.state for o in within.orders)),
        "refund_states": dict(Counter(r.state for r in within.refunds)),
        "transitions": sum(1 for s in snap.steps if _step_in_scope(s, within)),
    })
    return report


def _step_in_scope(step: Step, within: _Scope) -> bool:
    ids = {o.id for o in within.orders} if step.entity == "order" else {r.id for r in within.refunds}
    return step.entity_id in ids


def _check_notifications(snap: Snapshot, within: _Scope, report: Report) -> None:
    acked = {(a["kind"], str(a["key"]).upper()) for a in snap.attempts
             if a["acked"] and within.ref(a["kind"], a["key"])}
    rows: dict[tuple[str, str], list[InboxRow]] = defaultdict(list)
    for row in snap.inbox:
        rows[(row.kind, row.ref.upper())].append(row)
    for kind, key in sorted(acked):
        kept = rows.get((kind, key), [])
        if not kept:
            report.add("lost", f"acknowledged {kind} notification for {key} has no inbox row")
        for row in kept:
            if not row.processed:
                report.add("lost", f"acknowledged {kind} notification for {key} (inbox {row.id}) never processed")
    for row in snap.inbox:
        if within.ref(row.kind, row.ref) and not row.processed and (row.kind, row.ref.upper()) not in acked:
            report.add("lost", f"inbox {row.id} ({row.kind} {row.ref}) never processed")
    in_scope = [a for a in snap.attempts if within.ref(a["kind"], a["key"])]
    report.figures["notification_attempts"] = len(in_scope)
    report.figures["acked_notifications"] = len(acked)


def _check_histories(snap: Snapshot, within: _Scope, report: Report) -> None:
    by_record: dict[tuple[str, int], list[Step]] = defaultdict(list)
    for step in snap.steps:
        by_record[(step.entity, step.entity_id)].append(step)
    records: list[tuple[str, int, str, int, str]] = [("order", o.id, o.out_trade_no, o.version, o.state)
                                                     for o in within.orders]
    records += [("refund", r.id, r.out_refund_no, r.version, r.state) for r in within.refunds]
    for entity, record_id, ref, version, state in records:
        history = sorted(by_record.get((entity, record_id), []), key=lambda s: s.version)
        versions = [s.version for s in history]
        if versions != list(range(2, version + 1)):
            report.add("illegal", f"{entity} {ref}: audit versions {versions} are not 2..{version}")
        current = "CREATED"
        legal = _ORDER_EDGES if entity == "order" else _REFUND_EDGES
        terminal = ORDER_TERMINAL if entity == "order" else REFUND_TERMINAL
        for step in history:
            if step.from_state != current:
                report.add("illegal", f"{entity} {ref} v{step.version}: from {step.from_state}, was {current}")
            if (str(step.from_state), step.to_state) not in legal:
                report.add("illegal", f"{entity} {ref} v{step.version}: {step.from_state}->{step.to_state} "
                                      "is not an edge of the table")
            if step.from_state in terminal and step.source != "operator":
                report.add("illegal", f"{entity} {ref} v{step.version}: left terminal {step.from_state} "
                                      f"via {step.source}")
            current = step.to_state
        if current != state:
            report.add("illegal", f"{entity} {ref}: history ends in {current}, record says {state}")


def _check_money(snap: Snapshot, within: _Scope, report: Report) -> None:
    by_order: dict[int, list[RefundRow]] = defaultdict(list)
    for refund in within.refunds:
        by_order[refund.order_id].append(refund)
    steps: dict[int, list[Step]] = defaultdict(list)
    for step in snap.steps:
        if step.entity == "refund":
            steps[step.entity_id].append(step)
    paid_at = {s.entity_id: s.at for s in snap.steps if s.entity == "order" and s.to_state == "SUCCESS"}
    worst = Decimal(0)
    for order in within.orders:
        mine = by_order.get(order.id, [])
        if not mine:
            continue
        paid = order.amount if order.state == "SUCCESS" else Decimal(0)
        succeeded = sum((r.amount for r in mine if r.state == "REFUND_SUCCESS"), Decimal(0))
        if succeeded > paid:
            report.add("money", f"order {order.out_trade_no}: refunded {succeeded} > paid {paid}")
        for refund in mine:
            if order.id not in paid_at or refund.created_at < paid_at[order.id]:
                report.add("money", f"refund {refund.out_refund_no} created before order {order.out_trade_no} "
                                    "was paid")
        # Replay the refunds' lives in commit order: (time, 0=created | 1=transition, seq).
        timeline: list[tuple[datetime, int, int, int, str]] = [(r.created_at, 0, r.id, r.id, "CREATED") for r in mine]
        timeline += [(s.at, 1, s.seq, s.entity_id, s.to_state) for r in mine for s in steps.get(r.id, [])]
        states: dict[int, str] = {}
        amounts = {r.id: r.amount for r in mine}
        for _at, _kind, _seq, refund_id, to_state in sorted(timeline):
            states[refund_id] = to_state
            committed = sum((amounts[i] for i, s in states.items() if s in COMMITTED), Decimal(0))
            if committed > paid:
                report.add("money", f"order {order.out_trade_no}: {committed} committed to refunds > paid {paid}")
                break
            if paid:
                worst = max(worst, committed / paid)
    report.figures["max_refund_commitment_ratio"] = str(worst.quantize(Decimal("0.0001")))


def _check_truth(snap: Snapshot, within: _Scope, report: Report, expect_terminal: bool,
                 contradicted: set[str]) -> None:
    equal = _truth_of_orders(snap, within, report, expect_terminal, {c.upper() for c in contradicted})
    equal += _truth_of_refunds(snap, within, report, expect_terminal)
    local = {o.out_trade_no.upper() for o in snap.orders}
    for key in snap.truth_orders:
        if (within.everything or key in within.order_nos) and key not in local:
            report.add("truth", f"the gateway holds order {key} the store does not know")
    total = len(within.orders) + len(within.refunds)
    report.figures["final_states_equal"] = equal
    report.figures["final_states_equal_pct"] = round(100.0 * equal / total, 3) if total else 100.0


def _held(snap: Snapshot, ref: str, kinds: frozenset[str]) -> bool:
    """A contradiction recorded for an operator: the record keeps its state on purpose (never regressed)."""
    return any(r.upper() == ref.upper() and kind in kinds for r, kind in snap.anomalies)


def _truth_of_orders(snap: Snapshot, within: _Scope, report: Report, expect_terminal: bool,
                     contradicted: set[str]) -> int:
    last_trigger = {(s.entity, s.entity_id): s.trigger for s in snap.steps}
    equal = 0
    for order in within.orders:
        truth = snap.truth_orders.get(order.out_trade_no.upper())
        if truth is None:  # only an order the gateway refused may be unknown to it
            if order.state == "FAILED" and last_trigger.get(("order", order.id)) == "submit_rejected":
                equal += 1
            else:
                report.add("truth", f"order {order.out_trade_no} is {order.state}; the gateway never saw it")
        elif truth["status"] != order.state and order.out_trade_no.upper() in contradicted \
                and {truth["status"], order.state} <= UNPAID:  # orders.py rule 6: the first "not paid" stays
            equal += 1
        elif truth["status"] != order.state and _held(snap, order.out_trade_no, ORDER_CONTRADICTIONS):
            equal += 1
            report.figures["held_for_operator"] = report.figures.get("held_for_operator", 0) + 1
        elif truth["status"] != order.state:
            report.add("truth", f"order {order.out_trade_no} is {order.state}, the gateway says {truth['status']}")
        elif expect_terminal and order.state not in ORDER_TERMINAL:
            report.add("truth", f"order {order.out_trade_no} is still {order.state}")
        else:
            equal += 1
    return equal


def _truth_of_refunds(snap: Snapshot, within: _Scope, report: Report, expect_terminal: bool) -> int:
    equal = 0
    for refund in within.refunds:
        truth = snap.truth_refunds.get(refund.out_refund_no)
        if truth is None:  # only a refund the gateway refused may be unknown to it
            if refund.state == "REFUND_FAILED":
                equal += 1
            else:
                report.add("truth", f"refund {refund.out_refund_no} is {refund.state}; the gateway never saw it")
        elif truth["status"] != refund.state and _held(snap, refund.out_refund_no, REFUND_CONTRADICTIONS):
            equal += 1
            report.figures["held_for_operator"] = report.figures.get("held_for_operator", 0) + 1
        elif truth["status"] != refund.state:
            report.add("truth", f"refund {refund.out_refund_no} is {refund.state}, the gateway says "
                                f"{truth['status']}")
        elif Decimal(str(truth["refundAmount"])) != refund.amount:
            report.add("truth", f"refund {refund.out_refund_no} amount {refund.amount} != {truth['refundAmount']}")
        elif expect_terminal and refund.state not in REFUND_TERMINAL:
            report.add("truth", f"refund {refund.out_refund_no} is still {refund.state}")
        else:
            equal += 1
    return equal


def _check_ledger(snap: Snapshot, within: _Scope, report: Report) -> None:
    created_orders = {str(k).upper(): int(v) for k, v in snap.ledger.get("orders", {}).items()}
    created_refunds = {str(k): int(v) for k, v in snap.ledger.get("refunds", {}).items()}
    for key, count in created_orders.items():
        if count > 1 and (within.everything or key in within.order_nos):
            report.add("twice", f"order {key} was created {count} times at the gateway")
    for key, count in created_refunds.items():
        if count > 1 and (within.everything or key in within.refund_nos):
            report.add("twice", f"refund {key} was created {count} times at the gateway")
    for order in within.orders:
        if order.out_trade_no.upper() in snap.truth_orders and created_orders.get(order.out_trade_no.upper()) != 1:
            report.add("twice", f"order {order.out_trade_no}: ledger says "
                                f"{created_orders.get(order.out_trade_no.upper(), 0)} creations")
    for refund in within.refunds:
        if refund.out_refund_no in snap.truth_refunds and created_refunds.get(refund.out_refund_no) != 1:
            report.add("twice", f"refund {refund.out_refund_no}: ledger says "
                                f"{created_refunds.get(refund.out_refund_no, 0)} creations")


def _check_events(snap: Snapshot, within: _Scope, report: Report) -> None:
    rows = [e for e in snap.outbox if e.ref and within.ref("refund" if "refund_ref" in e.body else "order", e.ref)]
    expected = {e.event_id: e for e in rows}
    received: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in snap.deliveries:
        received[delivery.event_id].append(delivery)
    for event in rows:
        if not event.delivered:
            report.add("lost", f"event {event.event_id} never marked delivered")
        if event.event_id not in received:
            report.add("lost", f"event {event.event_id} never reached the consumer")
    copies = 0
    for event_id, got in received.items():
        if event_id not in expected:
            if within.everything:
                report.add("twice", f"the consumer got {event_id}, which is in no outbox")
            continue
        if len({d.body for d in got}) > 1:
            report.add("twice", f"event {event_id} was delivered with different bodies")
        copies += len(got) - 1
    per_record: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event in rows:
        per_record[(event.ref.upper(), event.type)].add(event.event_id)
    for order in within.orders:
        _one_terminal_event(report, per_record, order.out_trade_no.upper(), order.state, ORDER_EVENTS)
        if len(per_record.get((order.out_trade_no.upper(), "token.saved"), ())) > 1:
            report.add("twice", f"order {order.out_trade_no}: token.saved more than once")
    for refund in within.refunds:
        _one_terminal_event(report, per_record, refund.out_refund_no.upper(), refund.state, REFUND_EVENTS)
    report.figures["events_expected"] = len(expected)
    report.figures["events_distinct_received"] = len(set(received) & set(expected))
    report.figures["event_repeats_same_id"] = copies


def _one_terminal_event(report: Report, per_record: dict[tuple[str, str], set[str]], ref: str, state: str,
                        kinds: dict[str, str]) -> None:
    for terminal, type_ in kinds.items():
        ids = per_record.get((ref, type_), set())
        want = 1 if state == terminal else 0
        if len(ids) != want:
            category = "twice" if len(ids) > want else "lost"
            report.add(category, f"{ref} ({state}): {len(ids)} distinct {type_} event(s), expected {want}")


def _check_anomalies(snap: Snapshot, within: _Scope, report: Report, expected: Counter[str],
                     contradicted: set[str] | None) -> None:
    refs = within.order_nos | {r.upper() for r in within.refund_nos}
    mine = [(ref, kind) for ref, kind in snap.anomalies if within.everything or ref.upper() in refs]
    found = Counter(kind for _ref, kind in mine)
    report.figures["anomalies"] = dict(found)
    if contradicted is not None:
        allowed = {c.upper() for c in contradicted}
        kinds = ORDER_CONTRADICTIONS | REFUND_CONTRADICTIONS
        for ref, kind in mine:
            if ref.upper() not in allowed or kind not in kinds:
                report.add("anomaly", f"anomaly {kind} on {ref}, which the scenario did not contradict")
        return
    if found != expected:
        report.add("anomaly", f"anomalies {dict(found)} != injected {dict(expected)}")
