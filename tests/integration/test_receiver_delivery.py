"""Accepted notifications (reliability notes §5 rows 9-11) on SQLite and PostgreSQL.

A verified notification is kept (one inbox row per fact), enqueued (one job), acknowledged
with exactly ``{"code":"SUCCESS","msg":"Success"}``, and applied by the product's JSON worker.
Duplicates are acknowledged and change nothing; a notification for an order we do not know
yet is kept and matched once the order exists; one that disagrees with the order about money
is acknowledged, changes nothing, and is recorded as an anomaly with a merchant event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from tests.integration.test_receiver_harness import ACK, REFUND, Rig, now, open_rig, payment_note, refund_note
from worker.flows.notifications import apply_notification
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import loads_object
from worker.receiver.wakes import seen_key
from worker.store.inbox import dedupe_key, shard_of
from worker.store.schema import anomalies, outbox, transitions


@pytest.fixture
def rig(redis_url: str, database_url: str, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    with open_rig(redis_url=redis_url, database_url=database_url, platform=platform_keys) as r:
        yield r


def _applier_job(rig: Rig, ref: str) -> str:
    """The one job the receiver enqueues: its shard's applier (ids carry a random suffix)."""
    [job] = [j for j in rig.jobs() if j.startswith(f"rq:job:apply-shard-{shard_of(ref)}-")]
    return job


def acked(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.content == ACK


def test_a_verified_notification_is_kept_enqueued_acked_and_applied(rig: Rig) -> None:
    """200 + the exact ack body, one inbox row, one job (its shard's applier); the worker then applies it once."""
    rig.create_order("RX_ORDER_1")
    assert acked(rig.deliver(payment_note("RX_ORDER_1")))
    [row] = rig.inbox_rows()
    assert row.processed_at is None and row.kind == "payment" and row.ref == "RX_ORDER_1"
    assert rig.jobs() == [_applier_job(rig, "RX_ORDER_1")] and rig.queued() == 1
    rig.drain()
    assert rig.order("RX_ORDER_1").state == "SUCCESS"
    [row] = rig.inbox_rows()
    assert row.processed_at is not None and row.outcome == "applied"


def test_a_duplicate_is_acked_without_a_second_row_or_job(rig: Rig) -> None:
    """The same bytes again, and the same fact re-stamped with a new notifyTime: ack, still one row, one job."""
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    assert acked(rig.post(raw, sign=sign))
    assert acked(rig.post(raw, sign=sign))
    assert acked(rig.deliver(payment_note("RX_ORDER_1", notify_time=now() + timedelta(seconds=30))))
    assert len(rig.inbox_rows()) == 1 and len(rig.jobs()) == 1 and rig.queued() == 1


def test_a_duplicate_of_an_applied_notification_is_acked_and_changes_nothing(rig: Rig) -> None:
    """After the job ran, a redelivery is acked from the store even when the Redis fast path forgot it."""
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    assert acked(rig.post(raw, sign=sign))
    rig.drain()
    before = rig.snapshot()
    assert acked(rig.post(raw, sign=sign))  # fast path
    assert rig.rt.redis.delete(seen_key(dedupe_key("payment", "RX_ORDER_1", loads_object(raw)))) == 1
    assert acked(rig.post(raw, sign=sign))  # the SQL inbox says: already processed
    assert rig.snapshot() == before and rig.jobs() == []
    assert [(t.from_state, t.to_state) for t in rig.rows(transitions)] == [("CREATED", "SUCCESS")]


def test_concurrent_duplicates_keep_one_row_and_one_job(rig: Rig) -> None:
    """Eight simultaneous deliveries of one notification: all acked, one inbox row, one job, one transition."""
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    barrier, replies = threading.Barrier(8), []

    def deliver() -> None:
        with httpx.Client(timeout=15) as http:
            barrier.wait()
            replies.append(http.post(rig.url("/checus/notify/payment"), content=raw,
                                     headers={"content-type": "application/json", "sign": sign}))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 8 and all(acked(r) for r in replies)
    assert len(rig.inbox_rows()) == 1 and len(rig.jobs()) == 1
    rig.drain()
    order = rig.order("RX_ORDER_1")
    assert (order.state, order.version) == ("SUCCESS", 2)


def test_an_unknown_order_is_acked_kept_deferred_then_applied_when_the_order_exists(rig: Rig) -> None:
    """Row 10: ack, the row is kept and deferred by the job (not dropped), and applied once the order is stored."""
    assert acked(rig.deliver(payment_note("RX_LATE_ORDER")))
    [row] = rig.inbox_rows()
    assert apply_notification(rig.rt, row.id) == "deferred_unknown_order"
    for job in rig.jobs():  # the receiver's own job would do the same
        rig.rt.redis.delete(job)
    [row] = rig.inbox_rows()
    assert row.processed_at is None and row.outcome == "unknown_order" and row.next_attempt_at is not None
    assert rig.rows(anomalies) == []
    rig.create_order("RX_LATE_ORDER")  # the merchant's create commits after the notification: rematch
    assert rig.jobs() == [f"rq:job:apply-inbox-{row.id}"]
    rig.drain()
    assert rig.order("RX_LATE_ORDER").state == "SUCCESS"
    [row] = rig.inbox_rows()
    assert row.processed_at is not None and row.outcome == "applied"


def test_the_receivers_job_defers_an_unknown_order_without_losing_it(rig: Rig) -> None:
    """Drained by the real worker, the job for an unknown order leaves the row unprocessed and due again."""
    assert acked(rig.deliver(payment_note("RX_NOBODY")))
    rig.drain()
    [row] = rig.inbox_rows()
    assert row.processed_at is None and row.attempts == 1 and row.next_attempt_at > row.received_at
    assert rig.jobs() == [] and rig.rows(anomalies) == []


def test_a_refund_notification_for_an_unknown_refund_is_acked_kept_and_deferred(rig: Rig) -> None:
    """On the refund path: ack, one refund inbox row, and the job keeps it for a later match."""
    assert acked(rig.deliver(refund_note("RX_REFUND_1"), path=REFUND))
    rig.drain()
    [row] = rig.inbox_rows()
    assert (row.kind, row.ref, row.processed_at, row.outcome) == ("refund", "RX_REFUND_1", None, "unknown_refund")


@pytest.mark.parametrize(("amount", "currency", "kind"), [
    (Decimal("99.99"), "USD", "amount_mismatch"),
    (Decimal("100.00"), "EUR", "currency_mismatch"),
])
def test_a_notification_disagreeing_with_the_order_is_acked_recorded_and_changes_nothing(
        rig: Rig, amount: Decimal, currency: str, kind: str) -> None:
    """Row 11: ack; the order keeps its state and version; an anomaly row and an anomaly.detected event."""
    rig.create_order("RX_ORDER_1", "100.00", "USD")
    assert acked(rig.deliver(payment_note("RX_ORDER_1", amount=amount, currency=currency)))
    rig.drain()
    order = rig.order("RX_ORDER_1")
    assert (order.state, order.version, order.amount, order.currency) == ("CREATED", 1, Decimal("100.00"), "USD")
    assert rig.rows(transitions) == []
    [anomaly] = rig.rows(anomalies)
    assert (anomaly.entity, anomaly.entity_id, anomaly.ref, anomaly.kind) == ("order", order.id, "RX_ORDER_1", kind)
    assert [e.type for e in rig.rows(outbox)] == ["anomaly.detected"]
    [row] = rig.inbox_rows()
    assert row.processed_at is not None and row.outcome == "anomaly"
