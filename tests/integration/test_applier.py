"""The batch applier: a shard's waiting notifications applied together, with the same rules as one by one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from redis import Redis

from worker.config import Settings
from worker.flows.applier import apply_pending
from worker.gateway.signing import PortalKeyPair, Signer
from worker.gateway.wire import dumps, format_time
from worker.runtime import Runtime, Timers
from worker.runtime.queueing import make_queue, wake_key
from worker.store import inbox, repo
from worker.store.db import create_engine, read, write
from worker.store.migrate import upgrade
from worker.store.schema import anomalies, outbox, transitions
from worker.store.schema import inbox as inbox_table

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


def order(rt: Runtime, no: str, *, minor: int = 500) -> None:
    with write(rt.engine) as conn:
        repo.insert_order(conn, {
            "out_trade_no": no, "kind": "hosted", "state": "PENDING", "amount_minor": minor, "currency": "USD",
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
                                    (forged, "unverified", True), (wrong, "anomaly", False)])
    assert sorted(kinds) == ["amount_mismatch", "unverified_notification"]


def test_one_poisoned_row_does_not_stall_its_shard_and_is_parked_after_repeated_failures(
        rt: Runtime, platform_keys: PortalKeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose decision raises (a bug) leaves the batch's other rows applied; after N failures it is parked."""
    from datetime import timedelta
    from decimal import Decimal

    from statemachine import decide as real
    from worker.flows.applier import MAX_ROW_FAILURES

    numbers = same_shard(10)
    poisoned = numbers[4]
    for no in numbers:
        order(rt, no, minor=700 if no == poisoned else 500)
        keep(rt, platform_keys, no, "SUCCESS", amount=7 if no == poisoned else 5)

    def decide(facts: Any, event: Any, **kwargs: Any) -> Any:
        if facts.amount == Decimal(7):
            raise RuntimeError("a bug that only this order's facts reach")
        return real(facts, event, **kwargs)

    monkeypatch.setattr("worker.flows.applier.decide", decide)
    monkeypatch.setattr("worker.flows.transition.decide", decide)
    apply_pending(rt, 3)

    def poisoned_row() -> Any:
        with read(rt.engine) as conn:
            return conn.execute(sa.select(inbox_table).where(inbox_table.c.ref == poisoned)).one()

    with read(rt.engine) as conn:
        states = {no: getattr(repo.find_order(conn, no), "state", None) for no in numbers}
    assert states == {no: "PENDING" if no == poisoned else "SUCCESS" for no in numbers}
    row = poisoned_row()
    assert (row.processed_at, row.failures, row.outcome) == (None, 1, "error") and row.next_attempt_at is not None
    for attempt in range(2, MAX_ROW_FAILURES + 1):
        later = poisoned_row().next_attempt_at + timedelta(seconds=1)
        rt.clock = lambda at=later: at  # type: ignore[misc]
        assert apply_pending(rt, 3) == 1
        assert poisoned_row().failures == attempt
    row = poisoned_row()
    assert row.processed_at is not None and row.outcome == "parked"
    with read(rt.engine) as conn:
        parked = conn.execute(sa.select(anomalies)).all()
        events = conn.execute(sa.select(outbox.c.type).where(outbox.c.type == "anomaly.detected")).scalars().all()
    assert [(a.kind, a.entity, a.entity_id) for a in parked] == [("notification_parked", "inbox", row.id)]
    assert events == ["anomaly.detected"]


def test_saving_the_same_token_from_two_transactions_at_once_keeps_one_row(rt: Runtime) -> None:
    """Two writers that both miss the token and both insert: the second waits, then finds it (no IntegrityError)."""
    import threading

    order(rt, "TOK1")
    with read(rt.engine) as conn:
        order_id = repo.find_order(conn, "TOK1").id  # type: ignore[union-attr]
    values = {"user_id": "u", "token_id": "PMTOKEN-RACE", "card_org": "VISA", "masked_card": None,
              "source_order_id": order_id, "now": NOW}
    results: list[object] = []

    def second() -> None:
        try:
            with write(rt.engine) as conn:
                results.append(repo.save_token(conn, **values))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the test reports what the second writer met
            results.append(exc)

    with write(rt.engine) as conn:
        first = repo.save_token(conn, **values)  # type: ignore[arg-type]
        thread = threading.Thread(target=second)
        if rt.engine.dialect.name == "postgresql":  # the second writer now waits on the unique index
            thread.start()
            thread.join(0.5)
    if not thread.is_alive() and not results:  # SQLite serializes writers: the loser comes after the commit
        thread.start()
    thread.join(10)
    assert results == [first]
    with read(rt.engine) as conn:
        assert len(repo.tokens_of(conn, "u")) == 1


def test_a_batch_closes_the_not_found_alarms_of_the_records_it_finishes_and_only_theirs(
        rt: Runtime, platform_keys: PortalKeyPair) -> None:
    """Rule: a record that reaches a final state closes its own open not_found_at_gateway alarm;
    an alarm of a record still open, or of another kind, stays open."""
    from worker.store import anomalies as anomalies_store

    finished, failed, waiting = same_shard(3)
    for no in (finished, failed, waiting):
        order(rt, no)
    with write(rt.engine) as conn:
        ids = {no: repo.find_order(conn, no).id for no in (finished, failed, waiting)}  # type: ignore[union-attr]
        for no, kind in ((finished, "not_found_at_gateway"), (failed, "not_found_at_gateway"),
                         (waiting, "not_found_at_gateway"), (finished, "amount_mismatch")):
            anomalies_store.record(conn, entity="order", entity_id=ids[no], ref=no, kind=kind, detail="d",
                                   evidence={}, now=NOW, fields={})
    keep(rt, platform_keys, finished, "SUCCESS")
    keep(rt, platform_keys, failed, "FAILED")
    assert apply_pending(rt, 3) == 2
    with read(rt.engine) as conn:
        rows = conn.execute(sa.select(anomalies.c.entity_id, anomalies.c.kind, anomalies.c.resolved_at,
                                      anomalies.c.resolution)).all()
    still_open = {(r.entity_id, r.kind) for r in rows if r.resolved_at is None}
    assert still_open == {(ids[waiting], "not_found_at_gateway"), (ids[finished], "amount_mismatch")}
    closed = {r.entity_id: r.resolution for r in rows if r.resolved_at is not None}
    assert closed == {ids[finished]: "Checus reported the record SUCCESS",
                      ids[failed]: "Checus reported the record FAILED"}


def test_a_job_that_read_fewer_rows_than_a_batch_does_not_read_again(rt: Runtime,
                                                                       platform_keys: PortalKeyPair) -> None:
    """Rule: a job reads its shard's due rows after clearing the wake flag; if that read was not cut
    short by its limit, it saw every due row, and one recorded later has a job of its own (its
    wake-up). So the job reads the shard once, applies what it read, and ends."""
    numbers = same_shard(5)
    for no in numbers:
        order(rt, no)
        keep(rt, platform_keys, no, "SUCCESS")
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "inbox.shard" in statement:
            reads.append(statement)

    sa.event.listen(rt.engine, "before_cursor_execute", count)
    try:
        assert apply_pending(rt, 3) == 5
    finally:
        sa.event.remove(rt.engine, "before_cursor_execute", count)
    assert len(reads) == 1
    with read(rt.engine) as conn:
        assert {repo.find_order(conn, no).state for no in numbers} == {"SUCCESS"}  # type: ignore[union-attr]
