"""The event feed: the outbox's merchant events in id order, for shops that read instead of receiving webhooks.

The cursor is the outbox row's id. Ids are taken at insert, so on PostgreSQL a transaction that
took a lower id can commit after one with a higher id; a reader that had moved past it would
never see it. Events younger than ``settle`` (a few seconds; our transactions last milliseconds)
are therefore not served yet. SQLite commits one writer at a time, so there it needs no delay.

Reading ``after=N`` acknowledges every event up to N. When no other consumer is configured (no
``CHECUS_EVENT_HANDLER`` or webhook: ``ack_reads``), those events are marked delivered, so
``checus_outbox_lag_seconds`` measures what the feed's reader has not read yet instead of
growing for ever on an install that consumes events only through the feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import simplejson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.api.models import Event, EventPage
from worker.store.db import read, write
from worker.store.schema import outbox

MAX_ID = 2**31 - 1  # the outbox id column is a 32-bit integer on PostgreSQL


@dataclass(kw_only=True)
class Feed:
    engine: Engine
    clock: Callable[[], datetime]
    settle: timedelta = timedelta(seconds=2)
    ack_reads: bool = False

    def page(self, after: int, limit: int) -> EventPage:
        after = min(after, MAX_ID)  # a cursor past any id reads nothing (and must not overflow the column)
        settle = self.settle if self.engine.dialect.name != "sqlite" else timedelta(0)
        query = (sa.select(outbox.c.id, outbox.c.event_id, outbox.c.type, outbox.c.payload, outbox.c.created_at)
                 .where(outbox.c.id > after, outbox.c.created_at <= self.clock() - settle)
                 .order_by(outbox.c.id).limit(limit + 1))
        if after and self.ack_reads:
            self._acknowledge(after, self.clock() - settle)
        with read(self.engine) as conn:
            rows = conn.execute(query).all()
        events = [Event(cursor=str(r.id), event_id=r.event_id, type=r.type, created_at=r.created_at,
                        data=simplejson.loads(r.payload)) for r in rows[:limit]]
        next_cursor = events[-1].cursor if events else (str(after) if after else None)
        return EventPage(events=events, next_cursor=next_cursor, has_more=len(rows) > limit)

    def _acknowledge(self, upto: int, served_before: datetime) -> None:
        """Only events this feed could have served count as read."""
        with write(self.engine) as conn:
            conn.execute(outbox.update().where(outbox.c.id <= upto, outbox.c.delivered_at.is_(None),
                                               outbox.c.created_at <= served_before)
                         .values(delivered_at=self.clock()))
