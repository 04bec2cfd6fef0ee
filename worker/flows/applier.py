"""Applying a shard's waiting notifications in batches: rq's per-job cost spread over many.

Theory of operation. The receiver keeps each notification and wakes its shard's applier
(``Enqueuer.apply_pending``): one rq job per shard however many notifications arrive, and a
lone notification still starts a job at once. The job clears the wake flag, then repeatedly
takes the oldest due rows of its shard and applies them:

- payment notifications whose order exists are decided and written together in one SQL
  transaction (one commit, no per-order Redis lock): each row's transition is still a
  compare-and-set on the order's version (written for the whole batch in one statement per kind
  of change, ``store.apply.apply_many``), so a row whose order moved meanwhile (a poll, a
  duplicate job) writes nothing and is taken again on the one-at-a-time path;
- everything else (refunds, unknown orders, rows a batch could not apply) goes through the
  one-at-a-time path of ``notifications.apply_notification``, unchanged.

The rules are the same on both paths: the same verification, the same ``decide``, the same
``store.apply``.

Isolation. A batch that fails for any reason but ``Stale`` (an integrity error, a PostgreSQL
deadlock, a bug reached by one row's facts) is rolled back whole and its rows are taken one at a
time instead, each in a transaction of its own; a row that fails there is deferred with growing
backoff and its failure counted in SQL (``inbox.failures``), and after ``MAX_ROW_FAILURES`` it is
parked (finished as ``parked``, with a ``notification_parked`` anomaly; ``replay`` re-applies it).
So one poisoned row costs its shard one slower round, never a stall. Why not a SAVEPOINT per row:
it adds two statements per row to every batch (round trips on PostgreSQL), to pay for a failure
that almost never happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from statemachine import ORDER_TERMINAL, Decision, GatewayReport, Source, decide
from worker.flows.notifications import UNREADABLE, apply_notification, evidence_of, save_token_from
from worker.flows.transition import (
    after_commit,
    log_decision,
    order_event_fields,
    order_facts,
    poll_updates,
    wake_delivery,
)
from worker.gateway.notifications import PaymentNotification
from worker.gateway.replies import ReplyInvalid
from worker.gateway.wire import WireFormatError, loads_object
from worker.runtime import Runtime
from worker.runtime.crashpoints import crash_point
from worker.runtime.queueing import apply_wake_name
from worker.store import anomalies as anomalies_store
from worker.store import inbox, repo
from worker.store.apply import Deferred, Planned, Target, apply_many
from worker.store.db import read, write
from worker.store.inbox import InboxEntry
from worker.store.records import OrderRecord

log = structlog.get_logger("worker.flows.applier")
BATCH = 200  # rows per transaction: each query and commit of a round is shared by up to this many rows
MAX_ROWS_PER_JOB = 5000
ERROR_BACKOFF = timedelta(seconds=30)  # after a row's first failure; doubled after each further one ...
MAX_ERROR_BACKOFF = timedelta(hours=1)  # ... up to this
MAX_ROW_FAILURES = 5  # then the row is parked with an anomaly
PARKED = "notification_parked"


@dataclass(frozen=True, slots=True)
class _Row:
    entry: InboxEntry
    note: PaymentNotification


def apply_pending(rt: Runtime, shard: int) -> int:
    """Apply the shard's due notifications; returns how many rows were handled."""
    rt.enqueuer.woken(apply_wake_name(shard))
    handled = 0
    left: set[int] = set()  # rows the one-row path left pending and due (their record vanished): not again here
    while handled < MAX_ROWS_PER_JOB:
        limit = BATCH + len(left)
        with read(rt.engine) as conn:
            due = inbox.pending_in_shard(conn, shard, now=rt.clock(), limit=limit)
        entries = [e for e in due if e.id not in left][:BATCH]
        if not entries:
            return handled
        batchable, single = _split(rt, entries)
        leftovers = _apply_batch_isolated(rt, batchable) if batchable else []
        for entry in single + leftovers:
            if _apply_one(rt, entry) == "missing":
                left.add(entry.id)
        handled += len(entries)
        if len(due) < limit:
            # Every row due when this job read was in that read: one recorded since raised the wake
            # flag this job cleared first, and has a job of its own. Reading again would cost a
            # transaction per job to find nothing (at a few notifications per job, most of them).
            return handled
    rt.enqueuer.apply_pending(shard)  # a long backlog: hand over to a fresh job rather than run forever
    return handled


def _apply_batch_isolated(rt: Runtime, rows: list[_Row]) -> list[InboxEntry]:
    """``_apply_batch``, or, if it failed (rolled back whole), every one of its rows for the one-row path."""
    try:
        return _apply_batch(rt, rows)
    except Exception as exc:  # noqa: BLE001 - whatever one row did, the others must still be applied
        log.warning("notification.batch_failed", rows=len(rows), error=type(exc).__name__)
        return [row.entry for row in rows]


def _split(rt: Runtime, entries: list[InboxEntry]) -> tuple[list[_Row], list[InboxEntry]]:
    """Verified payment notifications go to the batch; anything else takes the one-at-a-time path."""
    batchable: list[_Row] = []
    single: list[InboxEntry] = []
    for entry in entries:
        if entry.kind != "payment" or entry.outcome in UNREADABLE or not rt.verifier.verify(entry.body, entry.sign):
            single.append(entry)
            continue
        try:
            batchable.append(_Row(entry, PaymentNotification.read(loads_object(entry.body))))
        except (WireFormatError, ReplyInvalid):
            single.append(entry)
    return batchable, single


def _apply_batch(rt: Runtime, rows: list[_Row]) -> list[InboxEntry]:
    """One transaction for the rows whose order exists; returns the rows left for the slow path.

    Every row is decided on the order as read, and their compare-and-sets are written together
    (``store.apply.apply_many``); a second row about an order already in the batch was decided on a
    version the first replaces, so it is left for the slow path, which reads the order again.
    """
    leftovers: list[InboxEntry] = []
    now = rt.clock()
    taken: list[tuple[_Row, OrderRecord, Planned]] = []
    with write(rt.engine) as conn:
        known = repo.find_orders(conn, (row.note.order.out_trade_no for row in rows))
        for row in rows:
            order = known.pop(row.note.order.out_trade_no.upper(), None)
            if order is None:  # never heard of, or already decided in this batch
                leftovers.append(row.entry)
                continue
            decision = decide(order_facts(order), _report(row.note), now=now, **rt.timers.not_found)
            target = Target(entity="order", id=order.id, ref=order.out_trade_no, version=order.version,
                            event_fields=order_event_fields(order))
            taken.append((row, order, Planned(target, decision, "notification", evidence_of(row.entry, row.note),
                                              poll_updates(rt, decision, ORDER_TERMINAL, now))))
        deferred = Deferred()
        versions = apply_many(conn, [planned for _, _, planned in taken], now=now, deferred=deferred)
        done: list[tuple[OrderRecord, Decision[Any]]] = []
        outcomes: dict[int, str] = {}
        for (row, order, planned), version in zip(taken, versions, strict=True):
            if version is None:  # the order moved since it was read: taken again, one at a time
                leftovers.append(row.entry)
                continue
            save_token_from(conn, rt, order.id, row.note.order, planned.decision)
            outcomes[row.entry.id] = str(planned.decision.outcome)
            done.append((order, planned.decision))
        deferred.flush(conn, now)
        inbox.mark_many_processed(conn, outcomes, now=now)
        crash_point("after_outbox")
    crash_point("after_commit")
    for order, decision in done:
        log_decision(decision, "order", order.out_trade_no, "notification")
        after_commit(rt, "order", order.id, order.id, decision, deliver=False)
    wake_delivery(rt, [decision for _, decision in done])  # one wake-up for the batch, not one per row
    return leftovers


def _report(note: PaymentNotification) -> GatewayReport:
    return GatewayReport(status=note.order.status.value, amount=note.order.amount, currency=note.order.currency,
                         source=Source.NOTIFICATION, app_id=note.header.app_id, merchant_no=note.header.merchant_no,
                         has_token=note.order.payment_token_id is not None)


def _apply_one(rt: Runtime, entry: InboxEntry) -> str | None:
    """Apply one row in transactions of its own; on failure count it, defer it, park it past the limit."""
    try:
        return apply_notification(rt, entry.id)
    except Exception as exc:  # noqa: BLE001 - one bad row must not stall its whole shard
        log.error("notification.apply_failed", inbox_id=entry.id, error=type(exc).__name__)
        _failed(rt, entry, type(exc).__name__)
        return None


def _failed(rt: Runtime, entry: InboxEntry, error: str) -> None:
    now = rt.clock()
    with write(rt.engine) as conn:
        failures = inbox.count_failure(conn, entry.id, retry_at=now + _backoff(entry.failures + 1))
        if failures is None or failures < MAX_ROW_FAILURES:
            return
        inbox.mark_processed(conn, entry.id, outcome="parked", now=now)
        anomalies_store.record(conn, entity="inbox", entity_id=entry.id, ref=entry.ref, kind=PARKED,
                               detail=f"{entry.kind} notification failed {failures} times ({error}): parked",
                               evidence={"inbox_id": entry.id, "error": error, "failures": failures}, now=now)
    log.error("notification.parked", inbox_id=entry.id, ref=entry.ref, failures=failures, error=error)


def _backoff(failures: int) -> timedelta:
    delay: timedelta = ERROR_BACKOFF * 2 ** (failures - 1)
    return min(delay, MAX_ERROR_BACKOFF)
