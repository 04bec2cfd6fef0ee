"""What the ops page and the ops commands show: read-only queries over the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.ops.gauges import AGE_LIMITS_SECONDS
from worker.store.schema import anomalies, orders, refunds


def stuck_limits(seconds: dict[str, float] | None) -> dict[str, timedelta]:
    """The configured limits (CHECUS_STUCK_AFTER), or the defaults the metrics use too."""
    return {state: timedelta(seconds=s) for state, s in (seconds or AGE_LIMITS_SECONDS).items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class AnomalyRow:
    id: int
    entity: str
    entity_id: int | None
    ref: str
    kind: str
    detail: str
    evidence: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None

    @classmethod
    def from_row(cls, row: Any) -> AnomalyRow:
        return cls(**dict(row._mapping))

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in
                ((name, getattr(self, name)) for name in self.__dataclass_fields__)}


def list_anomalies(conn: Connection, *, include_resolved: bool = False, ref: str | None = None) -> list[AnomalyRow]:
    query = sa.select(anomalies).order_by(anomalies.c.id.desc())
    if not include_resolved:
        query = query.where(anomalies.c.resolved_at.is_(None))
    if ref is not None:
        query = query.where(sa.func.upper(anomalies.c.ref) == ref.upper())
    return [AnomalyRow.from_row(r) for r in conn.execute(query.limit(500))]


def get_anomaly(conn: Connection, anomaly_id: int) -> AnomalyRow | None:
    row = conn.execute(sa.select(anomalies).where(anomalies.c.id == anomaly_id)).first()
    return AnomalyRow.from_row(row) if row else None


def counts_by_state(conn: Connection) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for entity, table in (("payments", orders), ("refunds", refunds)):
        rows = conn.execute(sa.select(table.c.state, sa.func.count()).group_by(table.c.state)).all()
        result[entity] = {state: n for state, n in sorted(rows)}
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckRow:
    entity: str
    ref: str
    state: str
    since: datetime
    age: timedelta


def stuck(conn: Connection, *, now: datetime, limits: dict[str, timedelta] | None = None) -> list[StuckRow]:
    """Open payments and refunds that have been in their state longer than the limit for it."""
    found: list[StuckRow] = []
    for state, limit in (limits or stuck_limits(None)).items():
        for entity, table, ref in (("payment", orders, orders.c.out_trade_no), ("refund", refunds,
                                                                             refunds.c.out_refund_no)):
            rows = conn.execute(sa.select(ref, table.c.updated_at).where(
                table.c.state == state, table.c.updated_at < now - limit).order_by(table.c.updated_at).limit(100))
            found += [StuckRow(entity=entity, ref=r[0], state=state, since=r[1], age=now - r[1]) for r in rows]
    return sorted(found, key=lambda s: s.since)
