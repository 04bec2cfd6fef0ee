"""Every anomaly is written the same way (row, ``anomaly.detected`` event, metric), and merchant event ids
are kept whole, so two long ids that share a prefix are two events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from redis import Redis

from worker.config import Settings
from worker.flows.notifications import apply_notification
from worker.gateway.signing import PortalKeyPair, Signer
from worker.gateway.wire import dumps, format_time
from worker.runtime import Runtime, Timers
from worker.store import inbox, outbox
from worker.store.db import create_engine, read, write
from worker.store.migrate import upgrade
from worker.store.schema import anomalies
from worker.store.schema import outbox as outbox_table

NOW = datetime.now(UTC)


@pytest.fixture
def rt(redis_url: str, database_url: str, platform_keys: PortalKeyPair) -> Iterator[Runtime]:
    settings = Settings.from_env({"REDIS_URL": redis_url, "DATABASE_URL": database_url, "CHECUS_APP_ID": "A",
                                  "CHECUS_MERCHANT_NO": "M", "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key})
    engine = create_engine(database_url)
    upgrade(engine)
    runtime = Runtime(settings=settings, engine=engine, redis=Redis.from_url(redis_url),
                      timers=Timers(orphan_retries=()))  # an unknown order is an anomaly at the first look
    yield runtime
    engine.dispose()


def test_two_long_event_ids_that_share_their_first_96_characters_are_two_events(rt: Runtime) -> None:
    """Ids are stored whole (the column is wide enough for the longest id the shell builds)."""
    ref = "R" * 64
    first = f"payment.succeeded:order:{ref}:12:notification_report_duplicate_of_success"
    second = f"payment.succeeded:order:{ref}:12:notification_report_contradicting_success"
    assert first[:96] == second[:96] and len(first) > 96
    with write(rt.engine) as conn:
        assert outbox.add(conn, event_id=first, type="payment.succeeded", payload={}, now=NOW)
        assert outbox.add(conn, event_id=second, type="payment.succeeded", payload={}, now=NOW)
        assert not outbox.add(conn, event_id=second, type="payment.succeeded", payload={}, now=NOW)
    with read(rt.engine) as conn:
        assert sorted(conn.execute(sa.select(outbox_table.c.event_id)).scalars()) == sorted([first, second])


def test_an_orphaned_notification_raises_its_anomaly_with_an_event_and_a_metric(
        rt: Runtime, platform_keys: PortalKeyPair) -> None:
    """A notification for an order that never appears: anomaly row, ``anomaly.detected`` event, counter."""
    body = dumps({"code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": "A", "merchantNo": "M",
                  "notifyTime": format_time(NOW), "notifyType": "PAYMENT",
                  "data": {"outTradeNo": "NOBODY1", "tradeToken": "T", "totalAmount": 5, "currency": "USD",
                           "status": "SUCCESS", "paymentDetails": []}})
    sign = Signer.from_value(platform_keys.private_key, setting="p").sign(body)
    with write(rt.engine) as conn:
        entry_id = inbox.record(conn, kind="payment", ref="NOBODY1", key="NOBODY1:SUCCESS", body=body, sign=sign,
                                now=NOW)[0]
    before = REGISTRY.get_sample_value("checus_anomalies_total", {"kind": "unknown_order"}) or 0.0
    assert apply_notification(rt, entry_id) == "orphan_unknown_order"
    with read(rt.engine) as conn:
        [anomaly] = conn.execute(sa.select(anomalies)).all()
        events = [outbox.OutboxEvent.from_row(r) for r in conn.execute(sa.select(outbox_table))]
    assert (anomaly.kind, anomaly.entity, anomaly.entity_id, anomaly.ref) == ("unknown_order", "inbox", entry_id,
                                                                              "NOBODY1")
    [event] = events
    assert event.type == "anomaly.detected"
    assert event.payload["kind"] == "unknown_order" and event.payload["anomaly_id"] == anomaly.id
    assert REGISTRY.get_sample_value("checus_anomalies_total", {"kind": "unknown_order"}) == before + 1
