"""Recovery bounds (target 3), measured on real processes: how a killed job comes back, and how
the receiver and the workers ride out a Redis outage without being restarted.

Every scenario makes one job slow on purpose (the simulator holds each /orderQuery answer for
a few seconds), waits until a worker is inside it, and then injects the fault, so the kill
always lands mid-job. The figures are printed in the run's summary and kept in each test's
``recovery.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from worker.devtools.demo.redis_server import RedisServer
from worker.runtime import Timers
from worker.store.db import read
from worker.store.repo import find_order

from .checker import check
from .cluster import Cluster, ClusterSpec
from .conftest import note
from .notifier import PaymentNotifier
from .procs import Pid

QUERY_DELAY = 3.0
# rq retries a job whose horse died after 1 s; the retry finds the dead horse's order lock and polls again
# as it runs out (its TTL counts from before the slow query), then the scheduler's tick enqueues it.
HORSE_BOUND = Timers().lock_ttl + 3.0
BOTH_BOUND = 100.0  # rq's heartbeat TTL (job monitoring interval + a fixed 60 s) dominates
SIMPLE_BOTH_BOUND = 150.0  # a SimpleWorker's heartbeat TTL is the job timeout (60 s) + 60 s
RECEIVER_BOUND = 5.0
OUTAGE = 8.0  # longer than redis-py's own retries (~3 s), so callers do see Redis gone
WORKER_BOUND = 20.0  # idle workers come back on rq's own reconnect backoff (1, 2, 4, 8 s)


def slow_query_cluster(root: Path, redis: RedisServer, database_url: str, *, fork: int, simple: int) -> Cluster:
    spec = ClusterSpec(time_scale=0.01, fork_workers=fork, simple_workers=simple, sim_seed=7,
                       sim_faults={"endpoints": {"orderQuery": {"delay_seconds": QUERY_DELAY}}},
                       refund_auto_complete_seconds=None, http_read_timeout=QUERY_DELAY + 5)
    return Cluster(root=root, redis=redis, database_url=database_url, spec=spec)


@pytest.fixture
def one_forking_worker(own_redis: RedisServer, pg_url: str, artifacts: Path) -> Iterator[Cluster]:
    cluster = slow_query_cluster(artifacts, own_redis, pg_url, fork=1, simple=0)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def paid_silently(cluster: Cluster, no: str) -> int:
    """An order the gateway settles without notifying: only a poll can learn it. Returns its id."""
    result = cluster.service.create_card_payment(out_trade_no=no, amount=Decimal("12.34"), currency="USD",
                                                 user_id="u1", subject="recovery",
                                                 front_callback_url="https://shop.test/return")
    assert result.state == "PENDING"
    assert cluster.sim.complete_order(no, "SUCCESS", notify=False) == 200
    with read(cluster.rt.engine) as conn:
        order = find_order(conn, no)
    assert order is not None
    return order.id


def in_poll(cluster: Cluster, worker: str, order_id: int, *, fork: bool, timeout: float = 20.0) -> Pid | None:
    """Wait until ``worker`` is inside the poll of ``order_id`` (its gateway call is held for seconds)."""
    sup = cluster.sup
    wanted = f"poll-order-{order_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        horse = sup.horse(worker) if fork else None
        if (horse is not None or not fork) and cluster.job_of(sup.pid(worker)) == wanted:
            time.sleep(0.5)  # well inside the held /orderQuery call
            return horse
        time.sleep(0.02)
    raise AssertionError(f"{worker} never ran {wanted} within {timeout} s")


def wait_for(check_: Any, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``check_()`` held, or None if it never did within ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check_():
            return time.monotonic() - began
        time.sleep(interval)
    return None


def record(artifacts: Path, name: str, figures: dict[str, Any]) -> None:
    (artifacts / "recovery.json").write_text(json.dumps(figures, indent=2, default=str))
    note(f"recovery {name}: {figures}")


def assert_converged(cluster: Cluster, numbers: set[str]) -> None:
    quiet = cluster.wait_quiet(60)
    assert quiet.reached, quiet.status
    report = check(cluster.snapshot(), scope=numbers)
    assert report.ok, report.summary()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_horse_job_is_run_again_within_seconds(one_forking_worker: Cluster, artifacts: Path) -> None:
    """kill -9 of the work horse mid-job: rq's parent sees it and the job runs again within seconds."""
    cluster = one_forking_worker
    order_id = paid_silently(cluster, "REC_HORSE")
    horse = in_poll(cluster, "fork-0", order_id, fork=True)
    assert horse is not None
    calls = cluster.gateway_calls("orderQuery")
    cluster.sup.kill_horse("fork-0", horse)
    again = wait_for(lambda: cluster.gateway_calls("orderQuery") > calls, 30)
    done = wait_for(lambda: cluster.state_of("REC_HORSE") == "SUCCESS", 30)
    record(artifacts, "horse", {"rerun_after_s": again, "success_after_s": done})
    assert again is not None and again <= HORSE_BOUND, f"re-run after {again} s"
    assert done is not None
    assert_converged(cluster, {"REC_HORSE"})


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_worker_leaves_its_horse_to_finish_the_job_once(one_forking_worker: Cluster,
                                                                artifacts: Path) -> None:
    """kill -9 of the worker process only: the horse (its own process group) finishes the job, once."""
    cluster = one_forking_worker
    order_id = paid_silently(cluster, "REC_PARENT")
    horse = in_poll(cluster, "fork-0", order_id, fork=True)
    assert horse is not None
    calls = cluster.gateway_calls("orderQuery")
    cluster.sup.kill_parent("fork-0")
    done = wait_for(lambda: cluster.state_of("REC_PARENT") == "SUCCESS", 30)
    assert done is not None, "the orphaned horse did not finish the job"
    assert wait_for(lambda: not horse.alive(), 10) is not None
    cluster.sup.restart("fork-0")
    time.sleep(3)  # room for a second execution, which must not happen
    executions = cluster.gateway_calls("orderQuery") - calls + 1
    record(artifacts, "parent", {"success_after_s": done, "executions": executions})
    assert executions == 1
    assert_converged(cluster, {"REC_PARENT"})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_jobs_of_a_dead_worker_and_horse_come_back_after_the_heartbeat_expires(
        own_redis: RedisServer, pg_url: str, artifacts: Path) -> None:
    """kill -9 of a forking worker with its horse, and of a SimpleWorker, both mid-job: each job is
    re-run once rq's heartbeat for it expires (forking: 5 s + 60 s; simple: job timeout + 60 s)."""
    cluster = slow_query_cluster(artifacts, own_redis, pg_url, fork=1, simple=0)
    try:
        cluster.start()
        fork_order = paid_silently(cluster, "REC_BOTH_FORK")
        horse = in_poll(cluster, "fork-0", fork_order, fork=True)
        cluster.start_worker("simple-0", fork=False)
        simple_order = paid_silently(cluster, "REC_BOTH_SIMPLE")
        in_poll(cluster, "simple-0", simple_order, fork=False)
        killed = time.monotonic()
        cluster.sup.kill_both("fork-0", horse)
        cluster.sup.kill9("simple-0", kind="both")
        cluster.sup.restart("fork-0")
        cluster.sup.restart("simple-0")
        fork_done = wait_for(lambda: cluster.state_of("REC_BOTH_FORK") == "SUCCESS", SIMPLE_BOTH_BOUND + 30, 0.25)
        simple_done = wait_for(lambda: cluster.state_of("REC_BOTH_SIMPLE") == "SUCCESS",
                               SIMPLE_BOTH_BOUND + 30 - (time.monotonic() - killed), 0.25)
        simple_done = None if simple_done is None else time.monotonic() - killed
        figures = {"fork_rerun_after_s": None if fork_done is None else round(fork_done - QUERY_DELAY, 1),
                   "simple_rerun_after_s": None if simple_done is None else round(simple_done - QUERY_DELAY, 1)}
        record(artifacts, "both", figures)
        assert fork_done is not None and fork_done - QUERY_DELAY <= BOTH_BOUND, figures
        assert simple_done is not None and simple_done - QUERY_DELAY <= SIMPLE_BOTH_BOUND, figures
        assert_converged(cluster, {"REC_BOTH_FORK", "REC_BOTH_SIMPLE"})
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_outage_gets_503_then_everything_resumes_without_restarts(
        own_redis: RedisServer, pg_url: str, artifacts: Path) -> None:
    """Redis killed -9 with jobs in flight: the receiver answers 503 (never 2xx) to new notifications
    while it is down; once it is back (AOF replayed), the same receiver and workers carry on."""
    # Forking workers: a job cut off by the outage comes back after their 65 s heartbeat, not a
    # SimpleWorker's 120 s (the storm shows SimpleWorkers surviving a Redis kill as well).
    spec = ClusterSpec(time_scale=0.01, fork_workers=3, simple_workers=0, sim_seed=11,
                       sim_faults={"endpoints": {"orderQuery": {"delay_seconds": 0.5}}},
                       refund_auto_complete_seconds=None, http_read_timeout=5)
    cluster = Cluster(root=artifacts, redis=own_redis, database_url=pg_url, spec=spec)
    try:
        cluster.start()
        numbers = [f"REC_REDIS{i:02d}" for i in range(40)]
        for no in numbers:
            cluster.service.create_card_payment(out_trade_no=no, amount=Decimal("5.00"), currency="USD",
                                                user_id="u2", subject="outage",
                                                front_callback_url="https://shop.test/return")
        for no in numbers:  # settled silently: polls are busy, and each is a fresh fact to notify
            assert cluster.sim.complete_order(no, "SUCCESS", notify=False) == 200
        generations = {name: cluster.sup.procs[name].generation for name in cluster.sup.procs}
        pids = {name: cluster.sup.pid(name) for name in cluster.sup.procs}
        notifier = PaymentNotifier(cluster, numbers, Decimal("5.00"))
        notify_next, answers = notifier.next, notifier.answers

        time.sleep(1.0)  # polls in flight
        killed = time.monotonic()
        own_redis.kill9()
        while time.monotonic() - killed < OUTAGE:  # new facts keep arriving while Redis is down
            notify_next()
            time.sleep(0.5)
        down_until = time.monotonic()  # Redis is certainly down until restart() is called
        own_redis.restart()
        back = time.monotonic()
        first_ack = None
        for _ in range(30):
            if notify_next() == 200:
                first_ack = answers[-1].answered - back
                break
            time.sleep(0.2)
        acked = notifier.acked()
        applied = wait_for(lambda: _processed(cluster, acked[0]), 60) if acked else None
        quiet = cluster.wait_quiet(180)
        figures = {
            "outage_s": round(back - killed, 1),
            "answers_while_down": [a.status for a in answers if a.answered < down_until],
            "receiver_first_2xx_after_s": None if first_ack is None else round(first_ack, 2),
            "workers_applied_it_after_s": None if applied is None or first_ack is None
            else round(first_ack + applied, 2),
            "quiet_after_s": round(quiet.seconds, 1), "unexpected_exits": cluster.sup.unexpected_exits(),
        }
        record(artifacts, "redis", figures)
        assert all(a.status != 200 for a in answers if a.answered < down_until), figures
        assert any(a.status == 503 for a in answers if a.answered < down_until), figures
        assert first_ack is not None and first_ack <= RECEIVER_BOUND, figures
        assert applied is not None and first_ack + applied <= WORKER_BOUND, figures
        assert not cluster.sup.unexpected_exits(), f"roles died in the outage: {figures}"
        assert {n: cluster.sup.procs[n].generation for n in cluster.sup.procs} == generations
        assert all(cluster.sup.running(n) and cluster.sup.pid(n) == pid for n, pid in pids.items())
        assert quiet.reached, quiet.status
        assert_converged(cluster, set(numbers))
    finally:
        cluster.stop()


def _processed(cluster: Cluster, no: str) -> bool:
    import sqlalchemy as sa

    from worker.store.schema import inbox

    with read(cluster.rt.engine) as conn:
        rows = conn.execute(sa.select(inbox.c.processed_at).where(inbox.c.ref == no)).all()
    return bool(rows) and all(r.processed_at is not None for r in rows)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_started_during_an_outage_waits_for_redis_and_every_worker_stops_gracefully(
        own_redis: RedisServer, pg_url: str, artifacts: Path) -> None:
    """A worker (re)started while Redis is down waits for it instead of exiting; SIGTERM still ends
    any worker at once (exit 0), whether it is working, idle, or waiting for Redis."""
    spec = ClusterSpec(time_scale=0.01, fork_workers=1, simple_workers=1, sim_seed=13,
                       refund_auto_complete_seconds=None)
    cluster = Cluster(root=artifacts, redis=own_redis, database_url=pg_url, spec=spec)
    try:
        cluster.start()
        own_redis.kill9()
        cluster.start_worker("simple-late", fork=False)
        cluster.start_worker("fork-waiting", fork=True)
        time.sleep(4.0)
        assert cluster.sup.running("simple-late") and cluster.sup.running("fork-waiting"), \
            cluster.sup.unexpected_exits()
        stopped = time.monotonic()
        # Stopped before rq ever ran in it: the default SIGTERM disposition ends it (-15), as it should.
        assert cluster.sup.stop("fork-waiting", timeout=15) in (0, -15)
        waited_stop = time.monotonic() - stopped
        own_redis.restart()
        cluster.sup.stop("simple-0", timeout=15)
        cluster.sup.stop("fork-0", timeout=15)
        paid_silently(cluster, "REC_LATE")  # only the worker started during the outage is left to poll it
        done = wait_for(lambda: cluster.state_of("REC_LATE") == "SUCCESS", 60)
        idle_stop = time.monotonic()
        code = cluster.sup.stop("simple-late", timeout=15)
        figures = {"stop_while_waiting_s": round(waited_stop, 2), "late_worker_polled_after_s": done,
                   "stop_when_idle_s": round(time.monotonic() - idle_stop, 2),
                   "exit_codes": {n: p.exits for n, p in cluster.sup.procs.items()}}
        record(artifacts, "start-during-outage", figures)
        assert done is not None, figures
        assert code == 0 and waited_stop < 10, figures
        # A worker whose rq loop never got going (Redis was away) ends by SIGTERM's default action (-15);
        # one that was working ends through rq's warm shutdown (0). Never -9: nothing had to be killed.
        assert all(p.exits and p.exits[-1] in (0, -15) for n, p in cluster.sup.procs.items()
                   if n.startswith(("fork", "simple"))), figures
        assert not cluster.sup.unexpected_exits(), figures
    finally:
        cluster.stop()
