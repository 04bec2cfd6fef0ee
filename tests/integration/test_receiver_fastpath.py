"""The duplicate fast path: a redelivery of a kept notification is acked for one Redis command and no SQL.

Checus retries until it gets the ack, and replays cluster (six attempts, duplicates of
duplicates), so the cheapest request must be the commonest repeat. Commands are counted on
the server (``INFO commandstats`` after ``CONFIG RESETSTAT``), which sees every client, pipelines
and scripts included. SQL is counted by an engine event.

The ``rig`` (its own redis-server, ``private_redis``) comes from ``conftest.py``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.integration.test_receiver_harness import ACK, Rig, payment_note
from worker.devtools.demo.redis_server import RedisServer
from worker.receiver.wakes import BatchWaker, Committed
from worker.runtime.queueing import apply_wake_name, wake_key
from worker.store.inbox import shard_of


class SqlCounter:
    """Every statement and connection checkout on an engine while attached."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.checkouts = 0

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def _checkout(self, *_args: Any) -> None:
        self.checkouts += 1

    def __enter__(self) -> SqlCounter:
        sa.event.listen(self.engine, "before_cursor_execute", self._statement)
        sa.event.listen(self.engine.pool, "checkout", self._checkout)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._statement)
        sa.event.remove(self.engine.pool, "checkout", self._checkout)


def server_commands(admin: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


@pytest.mark.parametrize("applied", [False, True], ids=["queued", "applied"])
def test_a_redelivery_costs_one_redis_command_and_no_sql(rig: Rig, private_redis: RedisServer,
                                                         applied: bool) -> None:
    """Second delivery of a kept notification (queued or already applied): ack after one EXISTS, zero SQL."""
    rig.create_order("RX_ORDER_1")
    raw, sign = rig.signed(payment_note("RX_ORDER_1"))
    assert rig.post(raw, sign=sign).content == ACK
    if applied:
        rig.drain()
    before = rig.snapshot()
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_resetstat()
    with SqlCounter(rig.rt.engine) as sql:
        response = rig.post(raw, sign=sign)
    assert (response.status_code, response.content) == (200, ACK)
    assert server_commands(admin) == {"config|resetstat": 1, "exists": 1}
    assert sql.statements == [] and sql.checkouts == 0
    assert rig.snapshot() == before


def test_a_new_notification_under_load_costs_its_check_and_a_share_of_two_pipelines(
        rig: Rig, private_redis: RedisServer) -> None:
    """With its shard's apply job already pending (its wake flag up), a new notification is acked
    after the fast-path EXISTS and its batch's two pipelines (the flag's SET NX, which finds it up,
    then the seen mark): no rq enqueue, and the retry is then a duplicate."""
    assert rig.deliver(payment_note("RX_WARM_UP")).status_code == 200  # connections made once per process
    rig.create_order("RX_ORDER_2")
    raw, sign = rig.signed(payment_note("RX_ORDER_2"))
    flag = wake_key(apply_wake_name(shard_of("RX_ORDER_2")))
    admin = redis.Redis.from_url(private_redis.url)
    admin.set(flag, 1, ex=60)  # as if a job for this shard were queued and not yet started
    queued = rig.queued()
    admin.config_resetstat()
    response = rig.post(raw, sign=sign)
    assert (response.status_code, response.content) == (200, ACK)
    assert server_commands(admin) == {"config|resetstat": 1, "exists": 1, "set": 2}
    assert rig.queued() == queued, "the pending job will find the row: nothing more is enqueued"
    row = next(r for r in rig.inbox_rows() if r.ref == "RX_ORDER_2")
    assert admin.exists(f"checus:seen:{row.dedupe_key}")


def test_a_batch_wakes_each_shard_once_and_marks_every_fact_seen(rig: Rig, private_redis: RedisServer) -> None:
    """Rule: after a batch commits, each shard with a new row needs one wake (a job enqueued only
    where none is pending), each kept fact one seen mark; nothing depends on the batch's size."""
    admin = redis.Redis.from_url(private_redis.url)
    refs = [f"RX_BATCH_{i}" for i in range(40)]
    shards = {shard_of(ref) for ref in refs}
    pending = sorted(shards)[: len(shards) // 2]  # half the shards already have a job on its way
    for shard in pending:
        admin.set(wake_key(apply_wake_name(shard)), 1, ex=60)
    rows = [Committed(key=f"k:{ref}", ref=ref, processed=i % 10 == 0) for i, ref in enumerate(refs)]
    queued = rig.queued()
    admin.config_resetstat()
    verdicts = BatchWaker(rig.rt.enqueuer).settle(rows)
    assert verdicts == [None] * len(rows)
    woken = {shard_of(r.ref) for r in rows if not r.processed}
    assert rig.queued() - queued == len(woken - set(pending))  # one job per shard that had none
    assert server_commands(admin)["set"] == len(woken) + len(rows)
    assert all(admin.exists(f"checus:seen:k:{ref}") for ref in refs)


def test_with_redis_down_no_new_fact_is_marked_seen_and_each_hears_why(rig: Rig,
                                                                       private_redis: RedisServer) -> None:
    """A batch committed while Redis is down: every new row is reported without a job (the receiver
    answers 503, Checus retries); a fact applied before needs no job and is not reported."""
    rows = [Committed(key="k:new", ref="RX_DOWN_1", processed=False),
            Committed(key="k:old", ref="RX_DOWN_2", processed=True)]
    private_redis.kill9()
    verdicts = BatchWaker(rig.rt.enqueuer).settle(rows)
    assert isinstance(verdicts[0], redis.RedisError) and verdicts[1] is None


def test_without_a_pending_job_a_new_notification_enqueues_one(rig: Rig, private_redis: RedisServer) -> None:
    """The batch raises the shard's flag; the receiver enqueues the apply job, then marks the fact seen."""
    rig.create_order("RX_ORDER_3")
    response = rig.deliver(payment_note("RX_ORDER_3"))
    assert (response.status_code, response.content) == (200, ACK)
    admin = redis.Redis.from_url(private_redis.url)
    assert admin.exists(wake_key(apply_wake_name(shard_of("RX_ORDER_3"))))
    assert rig.queued() == 1
    assert admin.exists(f"checus:seen:{rig.inbox_rows()[0].dedupe_key}")
    rig.drain()
    assert rig.order("RX_ORDER_3").state == "SUCCESS"


def test_a_commit_that_outlasts_the_wait_is_503_and_the_writer_lives_on(rig: Rig, monkeypatch: pytest.MonkeyPatch
                                                                         ) -> None:
    """The request gives up (503: Checus retries), the commit is not cancelled, the row is kept, and
    the writer thread goes on serving the next requests."""
    monkeypatch.setattr("worker.receiver.ingest.WAIT_SECONDS", 0.3)
    rig.create_order("RX_ORDER_4")
    path = str(rig.rt.engine.url.database)
    blocker = sqlite3.connect(path, timeout=5, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold SQLite's write lock past the receiver's wait
    try:
        slow = rig.deliver(payment_note("RX_ORDER_4"))
    finally:
        time.sleep(0.5)
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (slow.status_code, slow.json()["msg"]) == (503, "store_unavailable")
    deadline = time.monotonic() + 10
    while not rig.inbox_rows() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(rig.inbox_rows()) == 1, "the commit the request stopped waiting for still happened"
    retry = rig.deliver(payment_note("RX_ORDER_4"))
    assert (retry.status_code, retry.content) == (200, ACK)
    rig.create_order("RX_ORDER_5")
    assert rig.deliver(payment_note("RX_ORDER_5")).status_code == 200
    rig.drain()
    assert (rig.order("RX_ORDER_4").state, rig.order("RX_ORDER_5").state) == ("SUCCESS", "SUCCESS")
