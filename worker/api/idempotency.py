"""Idempotency-Key on POST, with Stripe's semantics, claimed in SQL before anything is done.

Theory of operation. A POST that carries ``Idempotency-Key: K`` first inserts a claim row for
K (a unique constraint: of two concurrent requests exactly one inserts it) holding the
request's fingerprint (method, path, canonical body). The winner acts and stores its answer
(status and body) on the row; every later request with K then gets that answer again, byte for
byte, and does nothing. A request with K and another fingerprint is refused (422): K names one
request. A request that finds K claimed but not answered waits ``wait`` seconds for the answer,
then gets 409 ``idempotency_in_progress`` (retry later with the same K).

What is not stored: a request refused before it ran (auth, validation) never claims K. An
unexpected failure (500) releases the claim, so a retry can run: that is safe because a create
is itself idempotent on ``out_trade_no`` / ``out_refund_no`` (the store decides; a repeat
returns the existing record). A claim whose holder died (no answer after ``stale_after``) is
taken over the same way. Rows are purged ``retention`` after their creation (at least 24 h).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import simplejson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.store.db import read, write
from worker.store.schema import api_idempotency as table
from worker.store.upsert import insert_if_absent

MAX_KEY = 255


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str  # JSON text, exactly as first sent
    replayed: bool = False


class KeyReused(Exception):
    """The key was first used with another request."""


class InProgress(Exception):
    """The first request with this key has not answered yet."""


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = simplejson.dumps(body, sort_keys=True, separators=(",", ":"), use_decimal=True)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


@dataclass(kw_only=True)
class Idempotency:
    engine: Engine
    clock: Callable[[], datetime]
    retention: timedelta = timedelta(hours=24)
    stale_after: timedelta = timedelta(seconds=60)
    wait: float = 5.0
    poll: float = 0.05

    def run(self, key: str, print_: str, act: Callable[[], Answer]) -> Answer:
        """``act()`` once for ``key``; a repeat replays its answer (see the module docstring)."""
        deadline = time.monotonic() + self.wait
        while not self._claim(key, print_):
            stored = self._stored(key)
            if stored is None:  # released or purged meanwhile: claim again
                continue
            if stored["fingerprint"] != print_:
                raise KeyReused(key)
            if stored["status"] is not None:
                return Answer(stored["status"], stored["response"], replayed=True)
            if time.monotonic() >= deadline:
                raise InProgress(key)
            time.sleep(self.poll)
        try:
            answer = act()
        except BaseException:
            self._release(key)
            raise
        if answer.status >= 500:
            self._release(key)
        else:
            self._complete(key, answer)
        return answer

    def _claim(self, key: str, print_: str) -> bool:
        now = self.clock()
        with write(self.engine) as conn:
            conn.execute(table.delete().where(table.c.created_at < now - self.retention))
            conn.execute(table.delete().where(table.c.idem_key == key, table.c.status.is_(None),
                                              table.c.claimed_at < now - self.stale_after))
            return insert_if_absent(conn, table, {"idem_key": key, "fingerprint": print_, "claimed_at": now,
                                                  "created_at": now}, key="idem_key")

    def _stored(self, key: str) -> dict[str, Any] | None:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(table.c.fingerprint, table.c.status, table.c.response)
                               .where(table.c.idem_key == key)).first()
        return dict(row._mapping) if row is not None else None

    def _complete(self, key: str, answer: Answer) -> None:
        with write(self.engine) as conn:
            conn.execute(table.update().where(table.c.idem_key == key)
                         .values(status=answer.status, response=answer.body, completed_at=self.clock()))

    def _release(self, key: str) -> None:
        with write(self.engine) as conn:
            conn.execute(table.delete().where(table.c.idem_key == key, table.c.status.is_(None)))
