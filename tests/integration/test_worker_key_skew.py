"""A notification the receiver verified but this worker cannot verify yet (a key rotation or a rolling
deploy in progress) is deferred with an anomaly, never finished, and applied once the worker trusts the key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.integration.test_receiver_harness import ACK, Rig, open_rig, payment_note, settings_for, signer_of
from worker.flows.notifications import apply_notification
from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair
from worker.runtime import Runtime
from worker.store import inbox as inbox_store
from worker.store.db import read
from worker.store.schema import anomalies


@pytest.fixture(scope="module")
def new_platform_keys() -> PortalKeyPair:
    return generate_portal_key_pair()


@pytest.fixture
def rig(redis_url: str, tmp_path: Path, platform_keys: PortalKeyPair,
        new_platform_keys: PortalKeyPair) -> Iterator[Rig]:
    """The receiver already trusts the new key K2 next to the old K1."""
    with open_rig(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", platform=platform_keys,
                  trusted=(platform_keys, new_platform_keys)) as r:
        yield r


def worker_trusting(rig: Rig, *keys: PortalKeyPair) -> Runtime:
    """A worker process's runtime over the rig's store and Redis, trusting only ``keys``."""
    settings = settings_for(redis_url=rig.rt.settings.redis_url, database_url=rig.rt.settings.database_url,
                            trusted=keys)
    return Runtime(settings=settings, engine=rig.rt.engine, redis=rig.rt.redis)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_row_signed_with_a_key_the_worker_does_not_trust_yet_waits_and_applies_later(
        rig: Rig, platform_keys: PortalKeyPair, new_platform_keys: PortalKeyPair) -> None:
    """K2-signed, worker on K1: pending with one anomaly however often retried; worker on K2: applied."""
    rig.create_order("RX_SKEW_1")
    assert rig.deliver(payment_note("RX_SKEW_1"), signer=signer_of(new_platform_keys)).content == ACK
    [row] = rig.inbox_rows()
    old_worker = worker_trusting(rig, platform_keys)
    anomalies_before = counter("checus_anomalies_total", kind="unverified_notification")
    deferred_before = counter("checus_notifications_deferred_total", kind="payment", reason="unverified")

    assert apply_notification(old_worker, row.id) == "deferred_unverified"
    assert apply_notification(old_worker, row.id) == "deferred_unverified"  # a retry: still no anomaly twice
    [kept] = rig.inbox_rows()
    assert kept.processed_at is None and kept.outcome == "unverified" and kept.next_attempt_at is not None
    with read(rig.rt.engine) as conn:
        assert row.id in inbox_store.due(conn, now=old_worker.clock() + timedelta(days=2),
                                         older_than=timedelta(0), limit=10)  # the sweeper will try it again
    [anomaly] = rig.rows(anomalies)
    assert (anomaly.kind, anomaly.entity, anomaly.entity_id, anomaly.resolved_at) == (
        "unverified_notification", "inbox", row.id, None)
    assert counter("checus_anomalies_total", kind="unverified_notification") == anomalies_before + 1
    assert counter("checus_notifications_deferred_total", kind="payment", reason="unverified") == deferred_before + 2
    assert rig.order("RX_SKEW_1").state == "CREATED"

    new_worker = worker_trusting(rig, platform_keys, new_platform_keys)  # the rolling deploy reached it
    assert apply_notification(new_worker, row.id) == "applied"
    assert rig.order("RX_SKEW_1").state == "SUCCESS"
    [done] = rig.inbox_rows()
    assert done.processed_at is not None and done.outcome == "applied"
    [anomaly] = rig.rows(anomalies)
    assert anomaly.resolved_at is not None and anomaly.resolved_by == "system"


def test_a_row_the_worker_cannot_parse_is_deferred_not_finished(rig: Rig, platform_keys: PortalKeyPair,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept row whose body this worker's parser refuses (an older version during a deploy) stays pending."""
    from worker.gateway import notifications, replies

    rig.create_order("RX_SKEW_2")
    assert rig.deliver(payment_note("RX_SKEW_2")).content == ACK
    [row] = rig.inbox_rows()
    worker = worker_trusting(rig, platform_keys)

    def older_parser(_body: object) -> notifications.PaymentNotification:
        raise replies.ReplyInvalid("a field this version does not know")

    with monkeypatch.context() as patched:
        patched.setattr(notifications.PaymentNotification, "read", staticmethod(older_parser))
        assert apply_notification(worker, row.id) == "deferred_unparsed"
    [kept] = rig.inbox_rows()
    assert kept.processed_at is None and kept.outcome == "unparsed"
    assert [a.kind for a in rig.rows(anomalies)] == ["unparsed_notification"]
    assert apply_notification(worker, row.id) == "applied"  # the new version parses it
    assert rig.order("RX_SKEW_2").state == "SUCCESS"
