"""Carrying out a ``Decision`` in one transaction: CAS on version, audit row, outbox, anomalies.

Theory of operation. Correctness comes from this module, not from the Redis lock: rq can run
a job twice, even at the same time, and a lock's TTL can expire under a paused worker. So a
state change is ``UPDATE ... SET state, version = version + 1 WHERE id AND version = :seen``
in the same transaction as its audit row and its outbox rows. If the row moved since it was
read, nothing is written and ``Stale`` is raised: the caller re-reads and decides again, and a
decision it already made (its own earlier attempt, or a concurrent duplicate) then comes out
as a no-op.

A decision that changes no state is just as conditional: its column updates, anomalies and
events, and whatever the caller writes with it (the inbox row marked processed, a saved token),
are committed only if the row is still at the version the decision was made on
(``UPDATE ... SET version = version ... WHERE id AND version = :seen``; on PostgreSQL that also
holds the row until commit, so no writer can slip in between).

Audit rows are written for every state change; decisions that change nothing write no audit
row (they are visible in the inbox outcome and the logs), except anomalies, which have their
own table, written through ``store.anomalies.record`` (with its event; an anomaly already open for
the same record and kind is not recorded twice). A
record reaching a final state closes its open ``not_found_at_gateway`` alarm: Checus found it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import simplejson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from statemachine import ORDER_TERMINAL, REFUND_TERMINAL, AnomalyKind, Decision, EmitEvent, RecordAnomaly
from worker.store import anomalies as anomalies_store
from worker.store import outbox
from worker.store.schema import anomalies, orders, refunds, transitions


class Stale(Exception):
    """The record changed since it was read: re-read and decide again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The record a decision is about: which table, which row, as of which version."""

    entity: str  # "order" | "refund" (or "inbox" for an anomaly about no record of ours: ``version`` None)
    id: int
    ref: str  # outTradeNo or outRefundNo: what events and anomalies are keyed by
    version: int | None
    event_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> sa.Table:
        return orders if self.entity == "order" else refunds


def _json(value: dict[str, Any]) -> str:
    return simplejson.dumps(value, use_decimal=True, sort_keys=True, separators=(",", ":"), default=str)


class Deferred:
    """Audit and outbox rows gathered over many decisions of one transaction, then written with one
    executemany each (``flush``), and the ``not_found_at_gateway`` alarms those decisions close, with
    one ``UPDATE`` per record kind and final state: the batch applier's way to spend less per
    notification (closing alarms one record at a time was a sixth of a worker's time on PostgreSQL,
    for alarms that are almost never open)."""

    def __init__(self) -> None:
        self.transitions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.finals: dict[tuple[str, str], list[int]] = {}  # (entity, final state) → record ids

    def flush(self, conn: Connection, now: datetime) -> None:
        if self.transitions:
            conn.execute(transitions.insert(), self.transitions)
        outbox.add_many(conn, self.events)
        for (entity, state), ids in self.finals.items():
            _close_not_found_alarms(conn, entity, ids, state, now)
        self.transitions, self.events, self.finals = [], [], {}


def apply(conn: Connection, target: Target, decision: Decision[Any], *, source: str,
          evidence: dict[str, Any], now: datetime, updates: dict[str, Any] | None = None,
          deferred: Deferred | None = None) -> int:
    """Write the decision; returns the record's version afterwards. Raises ``Stale``.

    With ``deferred``, the audit row and the events are gathered there instead of written at once;
    the caller flushes them in the same transaction.
    """
    item = Planned(target, decision, source, evidence, updates or {})
    if target.version is None:
        if decision.to_state is not None:
            raise ValueError(f"a state change needs the version it was decided on ({target.entity} {target.id})")
        _write_effects(conn, item, 0, now, deferred)  # about no record of ours (an inbox anomaly): nothing to hold
        return 0
    if not _compare_and_set_many(conn, [item], now):
        raise Stale(f"{target.entity} {target.id} moved past version {target.version}")
    version = target.version + (1 if decision.to_state is not None else 0)
    _write_effects(conn, item, version, now, deferred)
    return version


@dataclass(frozen=True, slots=True)
class Planned:
    """One decision for ``apply_many``: what ``apply`` takes, as a value."""

    target: Target
    decision: Decision[Any]
    source: str
    evidence: dict[str, Any]
    updates: dict[str, Any]


def apply_many(conn: Connection, planned: list[Planned], *, now: datetime, deferred: Deferred) -> list[int | None]:
    """``apply`` for decisions about distinct records: per decision, its record's version afterwards,
    or None where the record had moved (``Stale``: nothing of that decision is written).

    Why: one ``UPDATE`` per row was the largest single cost of the batch applier on PostgreSQL (a
    round trip and a statement each). Here the compare-and-sets of decisions that write the same
    thing (state, columns and values: in a batch of notifications, nearly all of them) are one
    ``UPDATE ... WHERE (id, version) IN (...) RETURNING id``; each row is still written only at the
    version its decision was made on, and only the decisions whose row was written get their audit
    row, anomalies and events. Two decisions about one record cannot share a statement (the second
    was made on a version the first replaces): that is refused.
    """
    seen: set[tuple[str, int]] = set()
    for item in planned:
        key = (item.target.entity, item.target.id)
        if key in seen or item.target.version is None:
            raise ValueError(f"apply_many needs one decision per record, at a known version ({key})")
        seen.add(key)
    written = _compare_and_set_many(conn, planned, now)
    versions: list[int | None] = []
    for item in planned:
        version = item.target.version or 0
        if (item.target.entity, item.target.id) not in written:
            versions.append(None)
            continue
        version += 1 if item.decision.to_state is not None else 0
        _write_effects(conn, item, version, now, deferred)
        versions.append(version)
    return versions


def _write_effects(conn: Connection, item: Planned, version: int, now: datetime, deferred: Deferred | None) -> None:
    """Everything of a decision but its compare-and-set: final-state alarms, audit row, anomalies, events."""
    target, decision, evidence = item.target, item.decision, item.evidence
    if decision.to_state is not None:
        if decision.to_state in ORDER_TERMINAL | REFUND_TERMINAL:
            _reached_final(conn, target, str(decision.to_state), now, deferred)
        audit = {"entity": target.entity, "entity_id": target.id, "version": version,
                 "from_state": str(decision.from_state), "to_state": str(decision.to_state),
                 "trigger": decision.trigger, "source": item.source, "evidence": _json(evidence), "at": now}
        if deferred is not None:
            deferred.transitions.append(audit)
        else:
            conn.execute(transitions.insert().values(**audit))
    recorded = any(isinstance(e, RecordAnomaly) for e in decision.effects)
    for effect in decision.effects:
        if isinstance(effect, RecordAnomaly):
            anomalies_store.record(conn, entity=target.entity, entity_id=target.id, ref=target.ref,
                                   kind=str(effect.kind), detail=effect.detail, evidence=evidence, now=now,
                                   fields={"state": str(decision.to_state or decision.from_state),
                                           "version": version, **target.event_fields})
        elif isinstance(effect, EmitEvent):
            if recorded and effect.type == anomalies_store.EVENT:
                continue  # the anomaly's own event, written with its row (``store.anomalies.record``)
            event = _event_row(target, effect.type, version, decision, now)
            if deferred is not None:
                deferred.events.append(event)
            else:
                outbox.add_row(conn, event)


def _compare_and_set_many(conn: Connection, planned: list[Planned], now: datetime) -> set[tuple[str, int]]:
    """Group decisions that write the same values; one conditional ``UPDATE`` per group. Returns
    the (entity, id) of every row written."""
    groups: dict[tuple[str, str | None, tuple[tuple[str, Any], ...]], list[tuple[int, int]]] = {}
    for item in planned:
        state = str(item.decision.to_state) if item.decision.to_state is not None else None
        shape = (item.target.entity, state, tuple(sorted(item.updates.items())))
        groups.setdefault(shape, []).append((item.target.id, item.target.version or 0))
    written: set[tuple[str, int]] = set()
    for (entity, state, values), pairs in groups.items():
        params: dict[str, Any] = {"cas_pairs": pairs, "cas_state": state, "cas_now": now}
        params.update({f"cas_{k}": v for k, v in values})
        statement = _cas_many_statement(entity, state is not None, tuple(k for k, _ in values))
        written.update((entity, row_id) for (row_id,) in conn.execute(statement, params))
    return written


@functools.cache
def _cas_many_statement(entity: str, changes_state: bool, columns: tuple[str, ...]) -> sa.Update:
    """``UPDATE ... WHERE (id, version) IN (...) RETURNING id``, built once per shape.

    Why cached: building the expression cost as much as executing it (measured in the batch
    applier's profile, a row at a time); its shapes are few (which extra columns a decision sets).
    """
    table = orders if entity == "order" else refunds
    values: dict[str, Any] = {c: sa.bindparam(f"cas_{c}") for c in columns}
    if changes_state:
        values.update(state=sa.bindparam("cas_state"), version=table.c.version + 1, updated_at=sa.bindparam("cas_now"))
    else:
        values.update(version=table.c.version)
    return (table.update()
            .where(sa.tuple_(table.c.id, table.c.version).in_(sa.bindparam("cas_pairs", expanding=True)))
            .values(**values).returning(table.c.id))


def _reached_final(conn: Connection, target: Target, state: str, now: datetime, deferred: Deferred | None) -> None:
    """Checus found the record after all: its open ``not_found_at_gateway`` alarm closes."""
    if deferred is not None:
        deferred.finals.setdefault((target.entity, state), []).append(target.id)
    else:
        _close_not_found_alarms(conn, target.entity, [target.id], state, now)


_CLOSE_NOT_FOUND = anomalies.update().where(
    anomalies.c.entity == sa.bindparam("alarm_entity"),
    anomalies.c.entity_id.in_(sa.bindparam("alarm_ids", expanding=True)),
    anomalies.c.kind == AnomalyKind.NOT_FOUND_AT_GATEWAY, anomalies.c.resolved_at.is_(None),
).values(resolved_at=sa.bindparam("alarm_now"), resolved_by="system",
         resolution=sa.bindparam("alarm_resolution"))


def _close_not_found_alarms(conn: Connection, entity: str, ids: list[int], state: str, now: datetime) -> None:
    conn.execute(_CLOSE_NOT_FOUND, {"alarm_entity": entity, "alarm_ids": ids, "alarm_now": now,
                                    "alarm_resolution": f"Checus reported the record {state}"})


def _event_row(target: Target, type_: str, version: int, decision: Decision[Any], now: datetime) -> dict[str, Any]:
    # Stable id: the same fact (record, version, type) always yields the same event id.
    suffix = f"{version}" if decision.to_state is not None else f"{version}:{decision.trigger}"
    event_id = f"{type_}:{target.entity}:{target.ref}:{suffix}"
    payload = {"event_id": event_id, "type": type_, target.entity + "_ref": target.ref,
               "state": str(decision.to_state or decision.from_state), "version": version,
               "occurred_at": now.isoformat(), **target.event_fields}
    return outbox.row(event_id=event_id, type=type_, payload=payload, now=now)
