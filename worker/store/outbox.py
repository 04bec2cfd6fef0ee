"""The outbox: merchant events written in the same transaction as the transition that caused them.

Delivery is at-least-once: an event is marked delivered only after its consumer accepted
it, and each carries a stable ``event_id`` so the consumer can drop repeats.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import simplejson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import outbox
from worker.store.upsert import insert_if_absent, insert_ignoring


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEvent:
    id: int
    event_id: str
    type: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int

    @classmethod
    def from_row(cls, row: Any) -> OutboxEvent:
        return cls(id=row.id, event_id=row.event_id, type=row.type, payload=simplejson.loads(row.payload),
                   created_at=row.created_at, attempts=row.attempts)


MAX_EVENT_ID = 255  # the column's width (migration 0004)


def stable_id(event_id: str) -> str:
    """The id as stored: whole when it fits (every id the shell builds does), else a prefix and a digest
    of the whole, so two distinct ids never collapse into one (a cut-off id once could)."""
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return f"{event_id[:MAX_EVENT_ID - 41]}#{digest}"


def row(*, event_id: str, type: str, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    event_id = stable_id(event_id)
    body = simplejson.dumps({**payload, "event_id": event_id} if "event_id" in payload else payload,
                            use_decimal=True, separators=(",", ":"), sort_keys=True)
    return {"event_id": event_id, "type": type, "payload": body, "created_at": now, "attempts": 0,
            "next_attempt_at": now}


def add_row(conn: Connection, event: dict[str, Any]) -> bool:
    """Insert one event row (from ``row``); False when an event with that id exists."""
    return insert_if_absent(conn, outbox, event, key="event_id")


def add(conn: Connection, *, event_id: str, type: str, payload: dict[str, Any], now: datetime) -> bool:
    return add_row(conn, row(event_id=event_id, type=type, payload=payload, now=now))


def add_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Many events in one statement (executemany); an event id already present is skipped."""
    if rows:
        conn.execute(insert_ignoring(conn, outbox, key="event_id"), rows)


def due(conn: Connection, *, now: datetime, limit: int) -> list[OutboxEvent]:
    query = (sa.select(outbox).where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
             .order_by(outbox.c.id).limit(limit))
    return [OutboxEvent.from_row(r) for r in conn.execute(query)]


def mark_delivered(conn: Connection, event_pk: int, *, now: datetime) -> None:
    conn.execute(outbox.update().where(outbox.c.id == event_pk, outbox.c.delivered_at.is_(None))
                 .values(delivered_at=now, attempts=outbox.c.attempts + 1))


def mark_failed(conn: Connection, event_pk: int, *, error: str, retry_in: timedelta, now: datetime) -> None:
    conn.execute(outbox.update().where(outbox.c.id == event_pk)
                 .values(attempts=outbox.c.attempts + 1, last_error=error[:200], next_attempt_at=now + retry_in))
