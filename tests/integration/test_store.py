"""The store on SQLite and PostgreSQL: migrations, compare-and-set transitions, atomic refund creation."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from statemachine import GatewayReport, OrderState, Source, decide
from worker.flows.transition import order_facts
from worker.store import outbox, repo
from worker.store.apply import Deferred, Planned, Stale, Target, apply, apply_many
from worker.store.db import create_engine, read, write
from worker.store.migrate import current, upgrade
from worker.store.records import OrderRecord
from worker.store.schema import anomalies, transitions
from worker.store.schema import inbox as inbox_table
from worker.store.schema import orders as orders_table

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Engine:
    eng = create_engine(database_url)
    upgrade(eng)
    return eng


def new_order(engine: Engine, no: str = "S1", state: str = "PENDING", amount: int = 10000) -> int:
    with write(engine) as conn:
        return repo.insert_order(
            conn,
            {
                "out_trade_no": no,
                "kind": "hosted",
                "state": state,
                "amount_minor": amount,
                "currency": "USD",
                "country": "US",
                "user_id": "u1",
                "subject": "s",
                "tokenize": False,
                "app_id": "A",
                "merchant_no": "M",
                "request_json": "{}",
                "created_at": NOW,
                "updated_at": NOW,
            },
        )


def success_report(amount: str = "100.00", currency: str = "USD") -> GatewayReport:
    return GatewayReport(status="SUCCESS", amount=Decimal(amount), currency=currency, source=Source.NOTIFICATION)


def test_migrations_reach_head_and_match_the_schema(engine: Engine) -> None:
    """Every migration applies, and the migrated schema is exactly what schema.py declares."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from worker.store.migrate import alembic_config
    from worker.store.schema import metadata

    assert current(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert {"orders", "refunds", "payment_tokens", "transitions", "inbox", "outbox", "anomalies"} <= set(
        sa.inspect(engine).get_table_names()
    )


def test_amounts_round_trip_exactly(engine: Engine) -> None:
    order_id = new_order(engine, amount=1999)
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
    assert order is not None and order.amount == Decimal("19.99") and order.created_at == NOW


def _apply(
    engine: Engine, order_id: int, version: int, report: GatewayReport, *, as_read: OrderRecord | None = None
) -> int:
    """Decide on the order as it is now (or as ``as_read``, a stale snapshot) and write with ``version``."""
    with write(engine) as conn:
        order = as_read or repo.get_order(conn, order_id)
        assert order is not None
        decision = decide(order_facts(order), report, now=NOW)
        target = Target(entity="order", id=order_id, ref=order.out_trade_no, version=version)
        return apply(conn, target, decision, source="notification", evidence={"test": 1}, now=NOW)


def test_transition_writes_state_audit_and_event_in_one_commit(engine: Engine) -> None:
    order_id = new_order(engine)
    assert _apply(engine, order_id, 1, success_report()) == 2
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
        history = repo.history(conn, "order", order_id)
        events = outbox.due(conn, now=NOW, limit=10)
    assert order is not None and (order.state, order.version) == ("SUCCESS", 2)
    assert [(h.from_state, h.to_state, h.version) for h in history] == [("PENDING", "SUCCESS", 2)]
    assert [e.event_id for e in events] == ["payment.succeeded:order:S1:2"]


def test_a_stale_writer_changes_nothing(engine: Engine) -> None:
    """A writer holding version 1 after someone moved the row to 2 is refused, and its audit row never lands."""
    order_id = new_order(engine)
    with read(engine) as conn:
        snapshot = repo.get_order(conn, order_id)  # a paused worker read PENDING at version 1 ...
    _apply(engine, order_id, 1, success_report())  # ... meanwhile another worker applied SUCCESS
    with pytest.raises(Stale):
        _apply(
            engine,
            order_id,
            1,
            GatewayReport(status="FAILED", amount=Decimal("100.00"), currency="USD", source=Source.POLL),
            as_read=snapshot,
        )
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
        rows = conn.execute(sa.select(sa.func.count()).select_from(transitions)).scalar_one()
    assert order is not None and order.state == "SUCCESS" and rows == 1


def test_mismatched_amount_records_one_anomaly_and_changes_nothing(engine: Engine) -> None:
    order_id = new_order(engine)
    for _ in range(2):  # the same contradiction twice: one open anomaly, one event
        _apply(engine, order_id, 1, success_report(amount="99.00"))
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
        kinds = conn.execute(sa.select(anomalies.c.kind)).scalars().all()
        events = [e.type for e in outbox.due(conn, now=NOW, limit=10)]
    assert order is not None and order.state == "PENDING" and order.version == 1
    assert kinds == ["amount_mismatch"] and events == ["anomaly.detected"]


def _refund(engine: Engine, order_id: int, no: str, amount: str) -> str:
    for _ in range(20):
        try:
            with write(engine) as conn:
                order = repo.get_order(conn, order_id)
                assert order is not None
                refund_id, check = repo.insert_refund(
                    conn, order, out_refund_no=no, amount=Decimal(amount), currency="USD", comments=None, now=NOW
                )
            return "created" if refund_id is not None else str(check.reason)
        except Stale:
            continue
    return "stale"


def test_refunds_never_exceed_the_paid_amount_under_concurrency(engine: Engine) -> None:
    """Eight threads ask for 30.00 each against 100.00 paid: exactly three are created."""
    order_id = new_order(engine, state="SUCCESS")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def ask(i: int) -> None:
        barrier.wait()
        results.append(_refund(engine, order_id, f"C{i}", "30.00"))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created"] * 3 + ["exceeds_refundable"] * 5
    with read(engine) as conn:
        total = sum(r.amount for r in repo.refunds_of(conn, order_id))
    assert total == Decimal("90.00")


@pytest.mark.parametrize(("state", "reason"), [("PENDING", "order_not_paid"), ("FAILED", "order_not_paid")])
def test_refunds_of_unpaid_orders_are_refused(engine: Engine, state: str, reason: str) -> None:
    order_id = new_order(engine, state=state)
    assert _refund(engine, order_id, "X1", "1.00") == reason


def test_inbox_dedupes_on_the_fact(engine: Engine) -> None:
    from worker.store import inbox

    body: dict[str, Any] = {"notifyTime": "a", "data": {"outTradeNo": "S1", "status": "SUCCESS", "totalAmount": 1}}
    restamped = {**body, "notifyTime": "b"}
    key, same = inbox.dedupe_key("payment", "S1", body), inbox.dedupe_key("payment", "s1", restamped)
    other = inbox.dedupe_key("payment", "S1", {"data": {**body["data"], "status": "FAILED"}})
    assert key == same and key != other
    with write(engine) as conn:
        first = inbox.record(conn, kind="payment", ref="S1", key=key, body=b"{}", sign="x", now=NOW)
        second = inbox.record(conn, kind="payment", ref="S1", key=key, body=b"{}", sign="x", now=NOW)
    assert first[1] is True and second[1] is False and first[0] == second[0]


def test_inbox_batches_keep_each_fact_once_and_say_what_was_processed(engine: Engine) -> None:
    """The receiver's group commit: a fact repeated within the batch and one kept earlier share a row."""
    from worker.store import inbox

    def entry(ref: str, key: str) -> inbox.NewEntry:
        return inbox.NewEntry(kind="payment", ref=ref, key=key, body=b"{}", sign="x")

    with write(engine) as conn:
        old_id, _, _ = inbox.record(conn, kind="payment", ref="B0", key="k0", body=b"{}", sign="x", now=NOW)
        inbox.mark_processed(conn, old_id, outcome="applied", now=NOW)
        kept = inbox.record_many(conn, [entry("B1", "k1"), entry("B0", "k0"), entry("B2", "k2"), entry("B1", "k1")],
                                 now=NOW)
    ids = [entry_id for entry_id, _ in kept]
    assert [processed for _, processed in kept] == [False, True, False, False]
    assert ids[1] == old_id and ids[0] == ids[3] and len({ids[0], ids[1], ids[2]}) == 3
    with read(engine) as conn:
        rows = conn.execute(sa.select(inbox_table.c.dedupe_key, inbox_table.c.shard)).all()
    assert sorted(r.dedupe_key for r in rows) == ["k0", "k1", "k2"]
    assert {r.dedupe_key: r.shard for r in rows}["k2"] == inbox.shard_of("B2")


def test_order_state_enum_matches_stored_values(engine: Engine) -> None:
    order_id = new_order(engine)
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
    assert order is not None and OrderState(order.state) is OrderState.PENDING


def _hold_write_lock(path: str) -> Any:
    import sqlite3

    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_a_sqlite_writer_waits_for_the_write_lock_and_gets_it(tmp_path: Any) -> None:
    """Another connection holds SQLite's write lock; ``write`` polls for it and commits once it is free."""
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with write(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    blocker = _hold_write_lock(str(tmp_path / "s.db"))
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    with write(engine) as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    release.join()
    with read(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 15000, "the busy timeout is restored"


def test_a_sqlite_write_lock_held_past_the_busy_timeout_is_an_error(tmp_path: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait is bounded: past the busy timeout the caller gets SQLAlchemy's OperationalError."""
    monkeypatch.setattr("worker.store.db.SQLITE_BUSY_TIMEOUT_MS", 200)
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with write(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    blocker = _hold_write_lock(str(tmp_path / "s.db"))
    with pytest.raises(sa.exc.OperationalError, match="locked"), write(engine) as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    blocker.execute("ROLLBACK")
    with write(engine) as conn:  # the connection is usable again
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    with read(engine) as conn:
        assert conn.exec_driver_sql("SELECT x FROM t").scalars().all() == [2]


def test_a_decision_that_changes_no_state_is_still_conditional_on_the_version_read(engine: Engine) -> None:
    """Defect: a no-op decision's writes (its column updates, and what the caller adds in the same
    transaction, such as the inbox row marked processed) were committed even if the row had moved since it
    was read. Now they raise ``Stale`` and nothing of them is written; on the current version they apply."""
    order_id = new_order(engine, state="SUCCESS")
    with read(engine) as conn:
        seen = repo.get_order(conn, order_id)
    assert seen is not None
    duplicate = decide(order_facts(seen), success_report(), now=NOW)  # SUCCESS again: changes no state
    assert duplicate.to_state is None
    target = Target(entity="order", id=order_id, ref="S1", version=seen.version)
    with write(engine) as conn:  # the row moves on: another writer's change commits first
        conn.execute(sa.update(orders_table).where(orders_table.c.id == order_id)
                     .values(version=seen.version + 1))
    with pytest.raises(Stale), write(engine) as conn:
        apply(conn, target, duplicate, source="notification", evidence={}, now=NOW, updates={"poll_count": 7})
    with read(engine) as conn:
        after = repo.get_order(conn, order_id)
    assert after is not None and after.poll_count == 0
    current_target = Target(entity="order", id=order_id, ref="S1", version=seen.version + 1)
    with write(engine) as conn:
        apply(conn, current_target, duplicate, source="notification", evidence={}, now=NOW, updates={"poll_count": 7})
    with read(engine) as conn:
        applied = repo.get_order(conn, order_id)
    assert applied is not None and (applied.poll_count, applied.version) == (7, seen.version + 1)


def test_a_poll_reschedule_is_conditional_on_the_version_its_poll_read(engine: Engine) -> None:
    """Rule: a poll that got no answer pushes the next poll out only if the record is still as it read
    it; a record that moved meanwhile keeps the next poll its mover decided (e.g. none, once final)."""
    from worker.store.schema import orders

    order_id = new_order(engine, "SP1")
    with read(engine) as conn:
        seen = repo.get_order(conn, order_id)
    assert seen is not None
    with write(engine) as conn:  # another job moves the record on and decides its next poll
        conn.execute(orders.update().where(orders.c.id == order_id)
                     .values(version=orders.c.version + 1, next_poll_at=None))
    later = NOW + timedelta(minutes=5)
    with write(engine) as conn:
        assert not repo.schedule_poll(conn, orders, order_id, later, count_poll=True, version=seen.version)
        after = repo.get_order(conn, order_id)
    assert after is not None and after.next_poll_at is None and after.poll_count == seen.poll_count
    with write(engine) as conn:
        assert repo.schedule_poll(conn, orders, order_id, later, count_poll=True, version=seen.version + 1)
        after = repo.get_order(conn, order_id)
    assert after is not None and after.next_poll_at == later and after.poll_count == seen.poll_count + 1


def _planned(engine: Engine, order_id: int, report: GatewayReport, version: int) -> Planned:
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
    assert order is not None
    decision = decide(order_facts(order), report, now=NOW)
    return Planned(Target(entity="order", id=order_id, ref=order.out_trade_no, version=version), decision,
                   "notification", {"test": 1}, {"next_poll_at": None} if decision.to_state else {})


def test_many_decisions_written_together_each_land_only_at_the_version_they_were_decided_on(engine: Engine) -> None:
    """Rule: writing many decisions in one go is the same as writing each alone. A record that moved
    since it was read gets nothing of its decision (no state, no audit row, no event); every other
    record gets its state, version + 1, its audit row and its event; one that changes no state is
    still written only at its version."""
    moving, paid, failing, unchanged = (new_order(engine, no) for no in ("M1", "M2", "M3", "M4"))
    with write(engine) as conn:  # M4 is already SUCCESS at version 2; M1 moves on after being read
        conn.execute(sa.update(orders_table).where(orders_table.c.id == unchanged).values(state="SUCCESS", version=2))
    failed = GatewayReport(status="FAILED", amount=Decimal("100.00"), currency="USD", source=Source.NOTIFICATION)
    planned = [_planned(engine, moving, success_report(), 1), _planned(engine, paid, success_report(), 1),
               _planned(engine, failing, failed, 1), _planned(engine, unchanged, success_report(), 2)]
    assert planned[3].decision.to_state is None
    with write(engine) as conn:
        conn.execute(sa.update(orders_table).where(orders_table.c.id == moving).values(version=5))
    deferred = Deferred()
    with write(engine) as conn:
        versions = apply_many(conn, planned, now=NOW, deferred=deferred)
        deferred.flush(conn, NOW)
    assert versions == [None, 2, 2, 2]
    with read(engine) as conn:
        states = {o: (r.state, r.version) for o in (moving, paid, failing, unchanged)
                  if (r := repo.get_order(conn, o)) is not None}
        audited = {h.entity_id for h in conn.execute(sa.select(transitions))}
        events = sorted(e.event_id for e in outbox.due(conn, now=NOW, limit=10))
    assert states == {moving: ("PENDING", 5), paid: ("SUCCESS", 2), failing: ("FAILED", 2),
                      unchanged: ("SUCCESS", 2)}
    assert audited == {paid, failing}
    assert events == ["payment.failed:order:M3:2", "payment.succeeded:order:M2:2"]


def test_two_decisions_about_one_record_are_refused_together(engine: Engine) -> None:
    """The second would be decided on a version the first replaces: it must be read again, not batched."""
    order_id = new_order(engine, "D1")
    twice = [_planned(engine, order_id, success_report(), 1)] * 2
    with pytest.raises(ValueError, match="one decision per record"), write(engine) as conn:
        apply_many(conn, twice, now=NOW, deferred=Deferred())
    with read(engine) as conn:
        order = repo.get_order(conn, order_id)
    assert order is not None and (order.state, order.version) == ("PENDING", 1)
