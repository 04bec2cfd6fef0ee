"""Anomalies: the one way one is recorded — its row, its ``anomaly.detected`` merchant event, its metric.

Why one function: an anomaly is a fact an operator (and the merchant's systems) must hear of.
Written in one place, none can be stored without its event or counted without its row (an orphaned
notification once was). A record has at most one *open* anomaly of a kind: recording it again
while it is open changes nothing, so a row retried many times raises its anomaly once. The event
is written in the caller's transaction (the outbox), its id names the anomaly row, and the metric
``checus_anomalies_total{kind}`` is counted when that transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import simplejson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

from worker.metrics import ANOMALIES
from worker.store import outbox
from worker.store.schema import anomalies

EVENT = "anomaly.detected"


def _json(value: dict[str, Any]) -> str:
    return simplejson.dumps(value, use_decimal=True, sort_keys=True, separators=(",", ":"), default=str)


def record(conn: Connection, *, entity: str, entity_id: int | None, ref: str, kind: str, detail: str,
           evidence: dict[str, Any], now: datetime, fields: dict[str, Any] | None = None) -> bool:
    """Open an anomaly unless one of this kind is open for the record; True when this call opened it."""
    open_already = conn.execute(sa.select(anomalies.c.id).where(
        anomalies.c.entity == entity, anomalies.c.entity_id == entity_id, anomalies.c.kind == kind,
        anomalies.c.resolved_at.is_(None),
    )).first()
    if open_already is not None:
        return False
    anomaly_id = int(conn.execute(anomalies.insert().values(
        entity=entity, entity_id=entity_id, ref=ref, kind=kind, detail=detail[:500], evidence=_json(evidence),
        created_at=now,
    )).inserted_primary_key[0])  # type: ignore[index]
    event_id = f"{EVENT}:{entity}:{ref}:{kind}:{anomaly_id}"
    payload = {"event_id": event_id, "type": EVENT, f"{entity}_ref": ref, "kind": kind, "anomaly_id": anomaly_id,
               "detail": detail[:500], "occurred_at": now.isoformat(), **(fields or {})}
    outbox.add(conn, event_id=event_id, type=EVENT, payload=payload, now=now)
    event.listen(conn, "commit", lambda _conn: _count(kind), once=True)
    return True


def _count(kind: str) -> None:
    ANOMALIES.labels(kind).inc()


def resolve_open(conn: Connection, *, entity: str, entity_id: int, kinds: Iterable[str], now: datetime,
                 resolution: str) -> None:
    """Close the record's open anomalies of these kinds: the system saw the cause go away."""
    conn.execute(anomalies.update().where(
        anomalies.c.entity == entity, anomalies.c.entity_id == entity_id, anomalies.c.kind.in_(list(kinds)),
        anomalies.c.resolved_at.is_(None),
    ).values(resolved_at=now, resolved_by="system", resolution=resolution[:500]))
