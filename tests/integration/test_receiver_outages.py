"""Outages (reliability notes §5 row 17, goal G3): Redis or the store down means 503, never an ack for new news.

Checus retries anything but the ack, so while the receiver cannot both keep a notification
and queue its job it must refuse it. Redis here is a private redis-server killed with -9 and
restarted on the same port; the store is made unreachable for real (the SQLite file replaced
by a directory, the PostgreSQL database closed to connections). ``/healthz`` says which part
is missing.

The ``rig`` (its own redis-server, ``private_redis``) and ``store_rig`` come from ``conftest.py``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.integration.test_receiver_harness import ACK, Rig, payment_note, store_down
from worker.devtools.demo.redis_server import RedisServer
from worker.store.schema import transitions

HEALTHY = {"store": "ok", "redis": "ok", "inbox_writer": "ok", "inbox_writer_restarts": 0}


def test_with_redis_down_a_new_notification_is_503_and_never_acked(rig: Rig, private_redis: RedisServer) -> None:
    """Redis killed: every delivery of a new notification is 503; once Redis is back the retry is acked and applied."""
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    private_redis.kill9()
    replies = [rig.post(raw, sign=sign) for _ in range(3)]
    replies.append(rig.deliver(payment_note("RX_ORDER_2")))  # an order we do not know: still new news
    assert [(r.status_code, r.json()) for r in replies] == [(503, {"code": "FAIL", "msg": "queue_unavailable"})] * 4
    assert (rig.order("RX_ORDER_1").state, rig.order("RX_ORDER_1").version) == ("CREATED", 1)
    # the rows stay unprocessed (not acknowledged, so Checus retries; the sweeper would also re-enqueue them)
    assert [(r.ref, r.processed_at) for r in rig.inbox_rows()] == [("RX_ORDER_1", None), ("RX_ORDER_2", None)]
    private_redis.start()
    assert rig.jobs() == []
    response = rig.post(raw, sign=sign)  # Checus's next retry
    assert (response.status_code, response.content) == (200, ACK)
    assert len(rig.inbox_rows()) == 2 and len(rig.jobs()) == 1
    rig.drain()
    assert rig.order("RX_ORDER_1").state == "SUCCESS" and len(rig.rows(transitions)) == 1


def test_with_redis_down_an_already_applied_notification_is_still_acked(rig: Rig,
                                                                       private_redis: RedisServer) -> None:
    """A duplicate of a processed notification needs no queue: the SQL inbox answers, so it is acked."""
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    assert rig.post(raw, sign=sign).content == ACK
    rig.drain()
    private_redis.kill9()
    response = rig.post(raw, sign=sign)
    assert (response.status_code, response.content) == (200, ACK)
    assert len(rig.inbox_rows()) == 1 and len(rig.rows(transitions)) == 1


def test_with_the_store_down_a_notification_is_503(store_rig: Rig) -> None:
    """Store unreachable: 503 store_unavailable, no job; when it is back the retry is kept and acked."""
    rig = store_rig
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    with store_down(rig):
        response = rig.post(raw, sign=sign)
        assert (response.status_code, response.json()) == (503, {"code": "FAIL", "msg": "store_unavailable"})
        assert rig.jobs() == [] and rig.queued() == 0
    assert rig.inbox_rows() == [] and rig.order("RX_ORDER_1").state == "CREATED"
    response = rig.post(raw, sign=sign)
    assert (response.status_code, response.content) == (200, ACK)
    assert len(rig.inbox_rows()) == 1 and len(rig.jobs()) == 1


def test_healthz_is_200_when_the_store_and_redis_answer(rig: Rig) -> None:
    """Both dependencies answer: 200 and which ones were checked."""
    response = rig.http.get(rig.url("/healthz"))
    assert (response.status_code, response.json()) == (200, HEALTHY)


def test_healthz_answers_at_once_while_a_writer_holds_the_sqlite_lock(rig: Rig, tmp_path: Path) -> None:
    """A busy store is not a down store: the probe reads, so it neither queues for nor takes the write lock."""
    writer = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a long write transaction elsewhere (a worker, a migration)
    try:
        started = time.monotonic()
        response = rig.http.get(rig.url("/healthz"), timeout=5)
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert (response.status_code, response.json()) == (200, HEALTHY)
    assert elapsed < 1.0


def test_healthz_is_503_when_redis_is_down(rig: Rig, private_redis: RedisServer) -> None:
    """Redis killed: 503 naming Redis; back up: 200 again without a restart."""
    private_redis.kill9()
    response = rig.http.get(rig.url("/healthz"))
    assert (response.status_code, response.json()) == (503, {**HEALTHY, "redis": "down"})
    private_redis.start()
    assert rig.http.get(rig.url("/healthz")).status_code == 200


def test_healthz_is_503_when_the_store_is_down(store_rig: Rig) -> None:
    """Store unreachable: 503 naming the store; back: 200 again."""
    with store_down(store_rig):
        response = store_rig.http.get(store_rig.url("/healthz"))
        assert (response.status_code, response.json()) == (503, {**HEALTHY, "store": "down"})
    assert store_rig.http.get(store_rig.url("/healthz")).status_code == 200
