"""The batch applier: a shard's waiting notifications applied together, with the same rules as one by one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from redis import Redis

from worker.applier import apply_pending
from worker.bootstrap import Runtime, Timers
from worker.config import Settings
from worker.gateway.signing import PortalKeyPair, Signer
from worker.gateway.wire import dumps, format_time
from worker.queueing import make_queue, wake_key
from worker.store import inbox, repo
from worker.store.db import create_engine, read, write
from worker.store.migrate import upgrade
from worker.store.schema import anomalies, outbox, transitions

NOW = datetime.now(UTC)


@pytest.fixture
def rt(redis_url: str, database_url: str, platform_keys: PortalKeyPair) -> Iterator[Runtime]:
    settings = Settings.from_env({"REDIS_URL": redis_url, "DATABASE_URL": database_url, "CHECUS_APP_ID": "A",
                                  "CHECUS_MERCHANT_NO": "M", "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key})
    engine = create_engine(database_url)
    upgrade(engine)
    runtime = Runtime(settings=settings, engine=engine, redis=Redis.from_url(redis_url), timers=Timers())
    yield runtime
    engine.dispose()


def order(rt: Runtime, no: str) -> None:
    with write(rt.engine) as conn:
        repo.insert_order(conn, {
            "out_trade_no": no, "kind": "hosted", "state": "PENDING", "amount_minor": 500, "currency": "USD",
            "country": "US", "user_id": "u", "subject": "s", "tokenize": False, "app_id": "A", "merchant_no": "M",
            "request_json": "{}", "created_at": NOW, "updated_at": NOW})


def keep(rt: Runtime, platform: PortalKeyPair, no: str, status: str, *, amount: Any = 5, forged: bool = False) -> int:
    body = dumps({"code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": "A", "merchantNo": "M",
                  "notifyTime": format_time(NOW), "notifyType": "PAYMENT",
                  "data": {"outTradeNo": no, "tradeToken": "T", "totalAmount": amount, "currency": "USD",
                           "status": status, "paymentDetails": []}})
    sign = Signer.from_value(platform.private_key, setting="p").sign(body)
    with write(rt.engine) as conn:
        return inbox.record(conn, kind="payment", ref=no, key=f"{no}:{status}:{amount}",
                            body=body.replace(b'"T"', b'"X"') if forged else body, sign=sign, now=NOW)[0]


def same_shard(count: int, shard: int = 3) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        if inbox.shard_of(f"AP{i}") == shard:
            found.append(f"AP{i}")
        i += 1
    return found


def test_a_shard_is_applied_in_one_job_with_one_audit_row_and_event_each(rt: Runtime,
                                                                         platform_keys: PortalKeyPair) -> None:
    numbers = same_shard(30)
    for no in numbers:
        order(rt, no)
        keep(rt, platform_keys, no, "SUCCESS")
    rt.redis.set(wake_key("apply-shard-3"), 1)
    assert apply_pending(rt, 3) == 30
    assert rt.redis.get(wake_key("apply-shard-3")) is None  # the job cleared its wake-up first
    with read(rt.engine) as conn:
        states = {no: repo.find_order(conn, no).state for no in numbers}  # type: ignore[union-attr]
        audit = conn.execute(sa.select(sa.func.count()).select_from(transitions)).scalar_one()
        events = conn.execute(sa.select(outbox.c.event_id)).scalars().all()
        unprocessed = conn.execute(sa.text("SELECT count(*) FROM inbox WHERE processed_at IS NULL")).scalar_one()
    assert set(states.values()) == {"SUCCESS"} and audit == 30 and unprocessed == 0
    assert sorted(events) == sorted(f"payment.succeeded:order:{no}:2" for no in numbers)
    assert apply_pending(rt, 3) == 0  # nothing left: applying again changes nothing


def test_two_facts_about_one_order_in_one_batch_are_judged_in_order(rt: Runtime,
                                                                    platform_keys: PortalKeyPair) -> None:
    """SUCCESS then a contradicting FAILED in the same batch: applied once, the second asks for a query."""
    [no] = same_shard(1)
    order(rt, no)
    keep(rt, platform_keys, no, "SUCCESS")
    keep(rt, platform_keys, no, "FAILED")
    apply_pending(rt, 3)
    with read(rt.engine) as conn:
        record = repo.find_order(conn, no)
        marks: dict[int, str] = dict(conn.execute(sa.text("SELECT id, outcome FROM inbox ORDER BY id")).all())
    assert record is not None and (record.state, record.version) == ("SUCCESS", 2)
    assert list(marks.values()) == ["applied", "confirm"]
    assert f"poll-order-{record.id}" in make_queue(rt.redis).scheduled_job_registry.get_job_ids()


def test_forged_unknown_and_mismatched_rows_take_the_careful_path(rt: Runtime, platform_keys: PortalKeyPair) -> None:
    good, unknown, forged, wrong = same_shard(4)
    for no in (good, forged, wrong):
        order(rt, no)
    keep(rt, platform_keys, good, "SUCCESS")
    keep(rt, platform_keys, unknown, "SUCCESS")
    keep(rt, platform_keys, forged, "SUCCESS", forged=True)
    keep(rt, platform_keys, wrong, "SUCCESS", amount=6)
    apply_pending(rt, 3)
    with read(rt.engine) as conn:
        states = {no: getattr(repo.find_order(conn, no), "state", None) for no in (good, forged, wrong)}
        marks = [tuple(r) for r in conn.execute(sa.text("SELECT ref, outcome, processed_at IS NULL FROM inbox"))]
        kinds = conn.execute(sa.select(anomalies.c.kind)).scalars().all()
    assert states == {good: "SUCCESS", forged: "PENDING", wrong: "PENDING"}
    assert sorted(marks) == sorted([(good, "applied", False), (unknown, "unknown_order", True),
                                    (forged, "forged", False), (wrong, "anomaly", False)])
    assert kinds == ["amount_mismatch"]
