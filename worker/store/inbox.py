"""The inbox: every verified notification, raw, before it is acknowledged.

The dedupe key names the *fact* (kind, merchant number, status and a digest of ``data``),
not the delivery: Checus may re-stamp ``notifyTime`` on a retry, and a retry of the same
fact must land on the same row. A notification that says something different about the
same order gets its own row and is judged by the state machine.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import simplejson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import inbox
from worker.store.upsert import insert_if_absent, insert_ignoring

SHARDS = 8  # notifications of one order always share a shard; shards are applied in parallel


def shard_of(ref: str) -> int:
    """Stable across processes and restarts (not Python's salted hash)."""
    return zlib.crc32(ref.upper().encode()) % SHARDS


def dedupe_key(kind: str, ref: str, body: dict[str, Any]) -> str:
    raw = body.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    canonical = simplejson.dumps(data, sort_keys=True, separators=(",", ":"), use_decimal=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:24]
    return f"{kind}:{ref.upper()}:{data.get('status')}:{digest}"[:160]


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxEntry:
    id: int
    kind: str
    ref: str
    body: bytes
    sign: str
    received_at: datetime
    processed_at: datetime | None
    outcome: str | None
    attempts: int
    failures: int

    @classmethod
    def from_row(cls, row: Any) -> InboxEntry:
        m = dict(row._mapping)
        return cls(**{k: m[k] for k in cls.__dataclass_fields__})


def record(conn: Connection, *, kind: str, ref: str, key: str, body: bytes, sign: str,
           now: datetime) -> tuple[int, bool, bool]:
    """Store a notification. Returns (id, newly_inserted, already_processed)."""
    entry = NewEntry(kind=kind, ref=ref, key=key, body=body, sign=sign)
    inserted = insert_if_absent(conn, inbox, _row(entry, now), key="dedupe_key")
    row = conn.execute(sa.select(inbox.c.id, inbox.c.processed_at).where(inbox.c.dedupe_key == key)).one()
    return int(row.id), inserted, row.processed_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEntry:
    kind: str
    ref: str
    key: str
    body: bytes
    sign: str


def _row(entry: NewEntry, now: datetime) -> dict[str, Any]:
    return {"dedupe_key": entry.key, "kind": entry.kind, "ref": entry.ref, "body": entry.body, "sign": entry.sign,
            "received_at": now, "attempts": 0, "shard": shard_of(entry.ref)}


def record_many(conn: Connection, entries: Sequence[NewEntry], *, now: datetime) -> list[tuple[int, bool]]:
    """``record`` for a batch, in two statements: (id, already_processed) per entry, in order.

    One executemany INSERT that skips facts already kept, then one SELECT of the batch's rows:
    the receiver's group commit writes up to a few hundred notifications per transaction, and
    a statement per row (plus a SELECT per row) was most of its writer thread's time.
    Entries of the same fact within the batch share one row.
    """
    conn.execute(insert_ignoring(conn, inbox, key="dedupe_key"), [_row(e, now) for e in entries])
    keys = sorted({e.key for e in entries})
    found = {r.dedupe_key: (int(r.id), r.processed_at is not None)
             for r in conn.execute(_BATCH_ROWS, {"keys": keys})}
    return [found[e.key] for e in entries]


def get(conn: Connection, entry_id: int) -> InboxEntry | None:
    row = conn.execute(sa.select(inbox).where(inbox.c.id == entry_id)).first()
    return InboxEntry.from_row(row) if row else None


def mark_processed(conn: Connection, entry_id: int, *, outcome: str, now: datetime) -> bool:
    """Mark done once; False if another run already did (the caller's work was a duplicate)."""
    result = conn.execute(
        inbox.update().where(inbox.c.id == entry_id, inbox.c.processed_at.is_(None))
        .values(processed_at=now, outcome=outcome[:32], attempts=inbox.c.attempts + 1)
    )
    return result.rowcount == 1


# The batch paths' statements, built once (building them per call showed in the worker's profile).
_MARK_MANY = (inbox.update()
              .where(inbox.c.id.in_(sa.bindparam("mark_ids", expanding=True)), inbox.c.processed_at.is_(None))
              .values(processed_at=sa.bindparam("mark_now"), outcome=sa.bindparam("mark_outcome"),
                      attempts=inbox.c.attempts + 1))
_PENDING_IN_SHARD = (sa.select(inbox).where(
    inbox.c.shard == sa.bindparam("shard"), inbox.c.processed_at.is_(None),
    sa.or_(inbox.c.next_attempt_at.is_(None), inbox.c.next_attempt_at <= sa.bindparam("now")),
).order_by(inbox.c.id).limit(sa.bindparam("limit")))
_BATCH_ROWS = sa.select(inbox.c.dedupe_key, inbox.c.id, inbox.c.processed_at).where(
    inbox.c.dedupe_key.in_(sa.bindparam("keys", expanding=True)))


def mark_many_processed(conn: Connection, outcomes: dict[int, str], *, now: datetime) -> None:
    """``mark_processed`` for many rows: one UPDATE per distinct outcome."""
    by_outcome: dict[str, list[int]] = {}
    for entry_id, outcome in outcomes.items():
        by_outcome.setdefault(outcome[:32], []).append(entry_id)
    for outcome, ids in by_outcome.items():
        conn.execute(_MARK_MANY, {"mark_ids": ids, "mark_now": now, "mark_outcome": outcome})


def defer(conn: Connection, entry_id: int, *, outcome: str, retry_at: datetime) -> None:
    """Keep an entry unprocessed and look at it again later (e.g. its order is not known yet)."""
    conn.execute(inbox.update().where(inbox.c.id == entry_id, inbox.c.processed_at.is_(None))
                 .values(outcome=outcome[:32], attempts=inbox.c.attempts + 1, next_attempt_at=retry_at))


def count_failure(conn: Connection, entry_id: int, *, retry_at: datetime) -> int | None:
    """A failed application: count it and look at the row again at ``retry_at``. Returns the row's
    failures so far, or None when it was processed meanwhile (by a duplicate job)."""
    conn.execute(inbox.update().where(inbox.c.id == entry_id, inbox.c.processed_at.is_(None))
                 .values(outcome="error", failures=inbox.c.failures + 1, next_attempt_at=retry_at))
    failures = conn.execute(sa.select(inbox.c.failures).where(
        inbox.c.id == entry_id, inbox.c.processed_at.is_(None))).scalar_one_or_none()
    return None if failures is None else int(failures)


def due(conn: Connection, *, now: datetime, older_than: timedelta, limit: int) -> list[int]:
    """Unprocessed entries that no job has finished: never enqueued, lost, or deferred and due."""
    cutoff = now - older_than
    query = (sa.select(inbox.c.id).where(
        inbox.c.processed_at.is_(None),
        sa.or_(
            sa.and_(inbox.c.next_attempt_at.is_(None), inbox.c.received_at <= cutoff),
            inbox.c.next_attempt_at <= now,
        ),
    ).order_by(inbox.c.id).limit(limit))
    return [int(r.id) for r in conn.execute(query)]


def pending_in_shard(conn: Connection, shard: int, *, now: datetime, limit: int) -> list[InboxEntry]:
    """Unprocessed entries of one shard that are due (not deferred into the future), oldest first."""
    return [InboxEntry.from_row(r) for r in conn.execute(_PENDING_IN_SHARD, {"shard": shard, "now": now,
                                                                             "limit": limit})]


def pending_for(conn: Connection, *, kind: str, ref: str) -> list[int]:
    """Unprocessed entries about one order or refund (re-matched once it becomes known)."""
    query = sa.select(inbox.c.id).where(inbox.c.processed_at.is_(None), inbox.c.kind == kind,
                                        sa.func.upper(inbox.c.ref) == ref.upper())
    return [int(r.id) for r in conn.execute(query)]
