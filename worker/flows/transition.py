"""Read, decide, write: the one path every order or refund change takes.

One write transaction reads the record, asks the pure core for a ``Decision``, and writes it
with compare-and-set (``store.apply``): if the record moved since it was read, nothing is
written and the whole transaction runs again from the read. No Redis lock is taken here: the
compare-and-set alone decides, so an answer from the gateway is recorded whatever else holds
the order's lock (a lock only saves effort, and only a poll takes one, before it asks). Extra
writes that belong to the same fact (a saved token, the inbox row marked processed, the send
ledger) join that transaction through ``updates`` and ``also``. Effects that reach outside the
store (queries, resubmits, event delivery) are started only after commit.

Refunds: a refund entering progress (CREATED → UNKNOWN or REFUND_PENDING) also compare-and-sets
its order's ``refund_seq``, so two refunds of one order can never both be claimed for sending.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from statemachine import (
    ORDER_TERMINAL,
    REFUND_IN_PROGRESS,
    REFUND_TERMINAL,
    Answer,
    ConfirmByQuery,
    Decision,
    EmitEvent,
    OrderEvent,
    OrderFacts,
    OrderState,
    RefundEvent,
    RefundFacts,
    RefundState,
    RefundSubmitClaimed,
    Resubmit,
    StartNextRefund,
    decide,
    decide_refund,
    may_submit,
    refundable,
)
from worker.metrics import DECISIONS, TRANSITIONS
from worker.runtime import Runtime
from worker.runtime.crashpoints import crash_point
from worker.store import repo
from worker.store.apply import Stale, Target, apply
from worker.store.db import read, write
from worker.store.records import OrderRecord, RefundRecord
from worker.store.schema import orders, refunds

log = structlog.get_logger("worker.flows.transition")
MAX_STALE_RETRIES = 20  # a record rewritten this many times while we decided: give up, the caller is told

Also = Callable[[Connection, Any, Decision[Any]], None]
Updates = dict[str, Any] | Callable[[Any, Decision[Any]], dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class Applied:
    decision: Decision[Any]
    record: Any  # the record as it was read (before the decision)


def order_facts(order: OrderRecord) -> OrderFacts:
    return OrderFacts(state=OrderState(order.state), amount=order.amount, currency=order.currency,
                      app_id=order.app_id, merchant_no=order.merchant_no, user_id=order.user_id,
                      tokenize=order.tokenize, created_at=order.created_at, last_submit_at=order.last_submit_at,
                      accepted_at=order.accepted_at, ledger=order.ledger)


def refund_facts(refund: RefundRecord, out_trade_no: str) -> RefundFacts:
    return RefundFacts(state=RefundState(refund.state), amount=refund.amount, currency=refund.currency,
                       out_trade_no=out_trade_no, created_at=refund.created_at,
                       last_submit_at=refund.last_submit_at, accepted_at=refund.accepted_at, ledger=refund.ledger)


def poll_updates(rt: Runtime, decision: Decision[Any], terminal: frozenset[Any],
                 now: datetime | None = None) -> dict[str, Any]:
    """The poll columns a decision sets. ``now`` (default: the clock) lets a batch give all its rows
    the same values, so that their compare-and-sets share one statement (``store.apply.apply_many``)."""
    at = rt.clock() if now is None else now
    if decision.to_state is None:
        if any(isinstance(e, ConfirmByQuery) for e in decision.effects):  # the query owed outlives a crash
            return {"next_poll_at": at + timedelta(seconds=rt.timers.confirm_delay)}
        return {}
    if decision.to_state in terminal:
        return {"next_poll_at": None}
    return {"next_poll_at": at + rt.timers.ladder(0), "poll_count": 0}


Prepared = tuple[Any, Decision[Any], Target]  # (record as read, decision, where to write it)


def _updates_for(updates: Updates, record: Any, decision: Decision[Any]) -> dict[str, Any]:
    if updates is None:
        return {}
    return updates(record, decision) if callable(updates) else updates


def write_decision(rt: Runtime, conn: Connection, prepared: Prepared, *, source: str, evidence: dict[str, Any],
                   updates: Updates = None) -> None:
    """Write a prepared decision in the caller's transaction (``Stale`` if the record moved)."""
    record, decision, target = prepared
    terminal = ORDER_TERMINAL if target.entity == "order" else REFUND_TERMINAL
    changes = {**poll_updates(rt, decision, terminal), **_updates_for(updates, record, decision)}
    crash_point("before_cas")
    apply(conn, target, decision, source=source, evidence=evidence, now=rt.clock(), updates=changes)


def committed(rt: Runtime, prepared: Prepared, order_id: int, source: str) -> Applied:
    """What follows a committed decision: its log line and metrics, then its effects outside the store."""
    record, decision, target = prepared
    crash_point("after_commit")
    log_decision(decision, target.entity, target.ref, source)
    after_commit(rt, target.entity, target.id, order_id, decision)
    return Applied(decision, record)


def _change(rt: Runtime, order_id: int, prepare: Callable[[Connection], Prepared | None], *,
            source: str, evidence: dict[str, Any], updates: Updates, also: Also | None) -> Applied | None:
    """Read–decide–write in one transaction, again from the top if the record moved."""
    for attempt in range(MAX_STALE_RETRIES):
        try:
            with write(rt.engine) as conn:
                prepared = prepare(conn)
                if prepared is None:
                    return None
                write_decision(rt, conn, prepared, source=source, evidence=evidence, updates=updates)
                if also is not None:
                    also(conn, prepared[0], prepared[1])
                crash_point("after_outbox")
        except Stale:
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter, not a secret
            continue
        return committed(rt, prepared, order_id, source)
    raise Stale("the record kept changing while it was decided")


def ledger_updates(rt: Runtime, send_no: int, answer: Answer, extra: dict[str, Any] | None = None) -> Updates:
    """The send ledger's columns once the answer to send ``send_no`` is read (on the record as re-read)."""
    def updates(record: Any, _decision: Decision[Any]) -> dict[str, Any]:
        ledger = record.ledger.answered(send_no, answer)
        values: dict[str, Any] = {"clean_sends": ledger.clean,
                                  "last_answer": str(ledger.last_answer) if ledger.last_answer else None}
        if answer in (Answer.ACCEPTED, Answer.REPEAT):
            values["accepted_at"] = rt.clock()
        return {**values, **(extra or {})}

    return updates


def claim_updates(rt: Runtime) -> Updates:
    """The columns a claimed send writes: one more send, its answer not read yet, sent now."""
    def updates(record: Any, decision: Decision[Any]) -> dict[str, Any]:
        if decision.to_state is None:
            return {}
        return {"sends": record.ledger.sends + 1, "last_answer": None, "last_submit_at": rt.clock()}

    return updates


def change_order(rt: Runtime, order_id: int, event: Callable[[OrderRecord], OrderEvent], *, source: str,
                 evidence: dict[str, Any], updates: Updates = None, also: Also | None = None) -> Applied | None:
    """Decide ``event`` for the order and write it; None when the order does not exist."""
    def prepare(conn: Connection) -> Prepared | None:
        order = repo.get_order(conn, order_id)
        return None if order is None else decide_order(rt, order, event(order))

    return _change(rt, order_id, prepare, source=source, evidence=evidence, updates=updates, also=also)


def decide_order(rt: Runtime, order: OrderRecord, event: OrderEvent) -> Prepared:
    """The decision for ``event`` and where to write it (the order as read)."""
    decision = decide(order_facts(order), event, now=rt.clock(), **rt.timers.not_found)
    return order, decision, Target(entity="order", id=order.id, ref=order.out_trade_no, version=order.version,
                                   event_fields=order_event_fields(order))


def change_refund(rt: Runtime, refund_id: int, order_id: int, event: Callable[[RefundRecord], RefundEvent], *,
                  source: str, evidence: dict[str, Any], updates: Updates = None,
                  also: Also | None = None) -> Applied | None:
    """Decide ``event`` for the refund and write it; None when the refund or its order does not exist."""
    return _change_refund(rt, refund_id, order_id, lambda refund, _others: event(refund), source=source,
                          evidence=evidence, updates=updates, also=also)


def claim_refund_send(rt: Runtime, refund_id: int, order_id: int) -> Applied | None:
    """Claim the send of a CREATED refund, only while no other refund of its order is in progress."""
    def claim(_refund: RefundRecord, others: list[RefundRecord]) -> RefundEvent:
        return RefundSubmitClaimed(slot_free=may_submit(repo.refund_pairs(others)))

    return _change_refund(rt, refund_id, order_id, claim, source="api", evidence={"api": "refund", "send": "claimed"},
                          updates=claim_updates(rt), also=None)


def _change_refund(rt: Runtime, refund_id: int, order_id: int,
                   event: Callable[[RefundRecord, list[RefundRecord]], RefundEvent], *, source: str,
                   evidence: dict[str, Any], updates: Updates, also: Also | None) -> Applied | None:
    """A refund entering progress (CREATED → UNKNOWN or REFUND_PENDING) claims its order's refund slot
    in the same transaction (``repo.bump_refund_seq``): a second refund of the order cannot enter alongside."""
    read_order: list[OrderRecord] = []

    def prepare(conn: Connection) -> Prepared | None:
        refund, order = repo.get_refund(conn, refund_id), repo.get_order(conn, order_id)
        if refund is None or order is None:
            return None
        read_order[:] = [order]
        others = [r for r in repo.refunds_of(conn, order_id) if r.id != refund.id]
        after = refundable(order.amount, [*repo.refund_pairs(others), (RefundState.REFUND_SUCCESS, refund.amount)])
        decision = decide_refund(refund_facts(refund, order.out_trade_no), event(refund, others), now=rt.clock(),
                                 refundable_if_applied=after, **rt.timers.not_found)
        return refund, decision, Target(entity="refund", id=refund.id, ref=refund.out_refund_no,
                                        version=refund.version, event_fields=refund_event_fields(refund, order))

    def also_claiming_the_slot(conn: Connection, record: Any, decision: Decision[Any]) -> None:
        if decision.from_state is RefundState.CREATED and decision.to_state in REFUND_IN_PROGRESS:
            repo.bump_refund_seq(conn, read_order[0])
        if also is not None:
            also(conn, record, decision)

    return _change(rt, order_id, prepare, source=source, evidence=evidence, updates=updates,
                   also=also_claiming_the_slot)


def order_event_fields(order: OrderRecord) -> dict[str, Any]:
    return {"out_trade_no": order.out_trade_no, "amount": str(order.amount), "currency": order.currency,
            "user_id": order.user_id}


def refund_event_fields(refund: RefundRecord, order: OrderRecord) -> dict[str, Any]:
    return {"out_refund_no": refund.out_refund_no, "out_trade_no": order.out_trade_no,
            "amount": str(refund.amount), "currency": refund.currency}


def log_decision(decision: Decision[Any], entity: str, ref: str, source: str) -> None:
    DECISIONS.labels(entity, str(decision.outcome)).inc()
    if decision.to_state is not None:
        TRANSITIONS.labels(entity, str(decision.from_state), str(decision.to_state), source).inc()
    log.info(f"{entity}.decided", ref=ref, outcome=str(decision.outcome), trigger=decision.trigger,
             from_state=str(decision.from_state), to_state=str(decision.to_state) if decision.to_state else None,
             source=source)


def after_commit(rt: Runtime, entity: str, record_id: int, order_id: int, decision: Decision[Any], *,
                 deliver: bool = True) -> None:
    """Start the effects that reach outside the store. Each is idempotent; losing one is healed
    by the scheduler (due polls, waiting refunds, undelivered events). ``deliver=False``: the caller
    wakes the event delivery once for many decisions (``wake_delivery``)."""
    for effect in decision.effects:
        if isinstance(effect, ConfirmByQuery):
            delay = timedelta(seconds=rt.timers.confirm_delay)
            if entity == "order":
                rt.enqueuer.poll_order(record_id, delay=delay)
            else:
                rt.enqueuer.poll_refund(record_id, delay=delay)
        elif isinstance(effect, Resubmit):
            if entity == "order":
                rt.enqueuer.resubmit_order(record_id)
            else:
                rt.enqueuer.submit_refund(record_id)
        elif isinstance(effect, StartNextRefund):
            start_next_refund(rt, order_id)
    if deliver:
        wake_delivery(rt, [decision])


def wake_delivery(rt: Runtime, decisions: list[Decision[Any]]) -> None:
    """One delivery wake-up (a Redis round trip) for any number of decisions that emitted events."""
    if rt.event_sinks and any(isinstance(e, EmitEvent) for d in decisions for e in d.effects):
        rt.enqueuer.deliver_events()


def start_next_refund(rt: Runtime, order_id: int) -> None:
    """Ask for the send of the order's oldest waiting refund, if none is in progress (the send's own
    claim checks the slot again, under compare-and-set)."""
    with read(rt.engine) as conn:
        waiting = repo.refunds_of(conn, order_id)
    if not may_submit(repo.refund_pairs(waiting)):
        return
    for refund in waiting:
        if refund.state == RefundState.CREATED:
            rt.enqueuer.submit_refund(refund.id)
            return


__all__ = ["Applied", "change_order", "change_refund", "claim_refund_send", "claim_updates", "committed",
           "decide_order", "ledger_updates", "orders", "refunds", "write_decision"]
