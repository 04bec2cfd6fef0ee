"""Idempotency claims in SQL (SQLite and PostgreSQL), on a clock of the test's own: expiry, takeover, release."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from worker.api.idempotency import Answer, Idempotency, InProgress, KeyReused
from worker.store.db import create_engine
from worker.store.migrate import upgrade


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def counting(calls: list[int], status: int = 201) -> Answer:
    calls.append(1)
    return Answer(status, f'{{"n":{len(calls)}}}')


def test_a_key_is_kept_24_hours_then_may_name_a_new_request(engine: Engine) -> None:
    clock, calls = Clock(), list[int]()
    idem = Idempotency(engine=engine, clock=clock)
    assert idem.run("k", "a", lambda: counting(calls)) == Answer(201, '{"n":1}')
    clock.now += timedelta(hours=23, minutes=59)
    assert idem.run("k", "a", lambda: counting(calls)) == Answer(201, '{"n":1}', replayed=True)
    with pytest.raises(KeyReused):
        idem.run("k", "b", lambda: counting(calls))
    clock.now += timedelta(minutes=2)
    assert idem.run("k", "b", lambda: counting(calls)) == Answer(201, '{"n":2}')


def test_a_claim_in_progress_is_waited_for_then_409_and_taken_over_once_stale(engine: Engine) -> None:
    clock, calls = Clock(), list[int]()
    idem = Idempotency(engine=engine, clock=clock, wait=0.1)
    assert idem._claim("k", "a")  # a holder that died before answering
    with pytest.raises(InProgress):
        idem.run("k", "a", lambda: counting(calls))
    assert calls == []
    clock.now += timedelta(seconds=61)
    assert idem.run("k", "a", lambda: counting(calls)).status == 201 and calls == [1]


def test_a_server_error_or_an_exception_releases_the_claim(engine: Engine) -> None:
    """Nothing is stored for a 5xx: the retry runs (a create is itself idempotent on its number)."""
    clock, calls = Clock(), list[int]()
    idem = Idempotency(engine=engine, clock=clock)
    assert idem.run("k", "a", lambda: counting(calls, 503)).status == 503

    def boom() -> Answer:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        idem.run("k", "a", boom)
    assert idem.run("k", "a", lambda: counting(calls)) == Answer(201, '{"n":2}')
