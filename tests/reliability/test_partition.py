"""Two hosts and a partition: host A is cut off from Redis, PostgreSQL and Checus for longer than
the order-lock TTL and the scheduler lease, then healed, while payments, polls and refunds go on.

Two network namespaces of the test's own (``netns.py``), each running ``web``, ``work`` and
``scheduler`` (``two_hosts.py``); Redis, PostgreSQL, the simulator and the event sink on the bridge
both reach. Checus notifies the receiver of the host the payment was made through, so both
receivers take notifications. PostgreSQL runs with ``idle_in_transaction_session_timeout`` as
deploy/README.md asks of production, so a transaction left open by the cut-off host releases its
row locks instead of holding up the other host.

The rules, stated on their own: the scheduler's leadership moves to host B during the cut and back
to A afterwards, and the terms recorded in SQL never overlap (each term's last tick is no later
than the next term's start: two leaders never act at once); no process exits; the checker finds
nothing lost, nothing done twice, no illegal transition, no refund above what was paid, and every
record in the state Checus holds. Figures are printed in the summary.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker.devtools.demo.redis_server import RedisServer
from worker.service_errors import ServiceError
from worker.store import leadership
from worker.store.db import read
from worker.store.schema import orders, scheduler_terms

from .checker import check
from .cluster import ClusterSpec
from .conftest import note
from .netns import Hosts, HostsUnavailable
from .private_postgres import PrivatePostgres
from .test_recovery import record, wait_for
from .two_hosts import TwoHostCluster

LOCK_TTL = 10.0  # Timers.lock_ttl
LEASE = 15.0  # Scheduler's lease_seconds
CUT = LEASE + 7.0  # longer than both, and long enough for host B to lead for a while
MOVE_BOUND = LEASE + 5.0  # the lease moves to B within the lease plus a few ticks on a loaded machine
ORDERS = 48
AMOUNT = Decimal("10.00")


def paid(cluster: TwoHostCluster, numbers: list[str]) -> list[str]:
    with read(cluster.rt.engine) as conn:
        rows = conn.execute(sa.select(orders.c.out_trade_no).where(
            orders.c.out_trade_no.in_(numbers), orders.c.state == "SUCCESS")).all()
    return [r.out_trade_no for r in rows]


class Load:
    """Settles payments (half notified, half left to the polls) and asks refunds, through both hosts."""

    def __init__(self, cluster: TwoHostCluster, numbers: list[str]) -> None:
        self.cluster, self.numbers = cluster, numbers
        self.unsettled = list(numbers)
        self.refunded: set[str] = set()
        self.refund_answers: dict[str, str] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []

    def host_of(self, no: str) -> str:
        return "a" if int(no[-2:]) % 2 == 0 else "b"

    def settle(self, count: int) -> None:
        for no in self.unsettled[:count]:
            notify = int(no[-2:]) % 4 != 3  # one in four is found only by a poll
            status = "SUCCESS" if int(no[-2:]) % 12 != 5 else "FAILED"
            if self.cluster.sim.complete_order(no, status, notify=notify) != 200:
                self.errors.append(f"complete {no}")
        del self.unsettled[:count]

    def refund_some(self, count: int) -> None:
        for no in [n for n in paid(self.cluster, self.numbers) if n not in self.refunded][:count]:
            self.refunded.add(no)
            service = self.cluster.services[self.host_of(no)]
            for part in ("3.00", "4.00"):  # two partial refunds of one payment
                try:
                    view = service.refund(no, Decimal(part))
                    self.refund_answers[view.refund.out_refund_no] = view.refund.state
                except ServiceError as exc:  # a refusal is an answer too; the checker judges the money
                    self.refund_answers[f"{no}:{part}"] = type(exc).__name__

    def run(self) -> None:
        while not self.stop.is_set() and self.unsettled:
            self.settle(1)
            self.refund_some(1)
            self.stop.wait(0.7)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_host_cut_off_past_the_lock_ttl_and_the_lease_loses_nothing(artifacts: Path) -> None:
    try:
        hosts = Hosts(["a", "b"])
    except HostsUnavailable as exc:
        pytest.fail(f"the partition test needs network namespaces and could not make them: {exc}")
    redis = pg = cluster = None
    try:
        redis = RedisServer(artifacts / "redis", host=hosts.services).start()
        pg = PrivatePostgres(host=hosts.services,
                             settings={"idle_in_transaction_session_timeout": "5s"}).start()
        spec = ClusterSpec(time_scale=0.01, fork_workers=1, simple_workers=1, sim_seed=31,
                           refund_auto_complete_seconds=100.0, http_read_timeout=5)
        cluster = TwoHostCluster(root=artifacts, redis=redis, database_url=pg.url, spec=spec, hosts=hosts)
        cluster.start()
        numbers = [f"PART{i:02d}" for i in range(ORDERS)]
        load = Load(cluster, numbers)
        for no in numbers:
            cluster.services[load.host_of(no)].create_card_payment(
                out_trade_no=no, amount=AMOUNT, currency="USD", user_id="u7", subject="partition",
                front_callback_url="https://shop.test/return")
        load.settle(12)
        assert wait_for(lambda: len(paid(cluster, numbers)) >= 8, 60) is not None
        load.refund_some(3)
        first_holder = wait_for(lambda: cluster.holder_host(current(cluster)[1]) is not None, 30)
        assert first_holder is not None
        before = cluster.holder_host(current(cluster)[1])
        if before != "a":  # the test needs A to lead when it is cut off: hand the lease to A
            cluster.sup.stop("scheduler-b")
            assert wait_for(lambda: cluster.holder_host(current(cluster)[1]) == "a", 30) is not None
            cluster.sup.start("scheduler-b", cluster.sup.procs["scheduler-b"].argv,
                              cluster.sup.procs["scheduler-b"].env)
        pids = {name: cluster.sup.pid(name) for name in cluster.sup.procs}

        worker = threading.Thread(target=load.run, daemon=True)
        worker.start()
        time.sleep(2.0)
        hosts.cut("a")
        cut = time.monotonic()
        moved = None
        while time.monotonic() - cut < CUT:
            if moved is None and cluster.holder_host(current(cluster)[1]) == "b":
                moved = time.monotonic() - cut
            time.sleep(0.25)
        hosts.heal("a")
        healed = time.monotonic()
        worker.join(120)
        load.stop.set()
        load.settle(len(load.unsettled))
        # and back: host B's scheduler stops (a rolling restart, say); host A's takes the lease again
        stopping = time.monotonic()
        cluster.sup.stop("scheduler-b")
        back = wait_for(lambda: cluster.holder_host(current(cluster)[1]) == "a", 60)
        back = None if back is None else time.monotonic() - stopping
        quiet = cluster.wait_quiet(240, final=True)
        report = check(cluster.snapshot(), scope=set(numbers))
        history = terms(cluster)
        fenced = sum(path.read_text(errors="replace").count("scheduler.fenced")
                     for path in cluster.sup.log_dir.glob("scheduler-*.log"))
        figures = {
            "cut_s": round(healed - cut, 1), "lock_ttl_s": LOCK_TTL, "lease_s": LEASE,
            "lease_to_b_after_cut_s": None if moved is None else round(moved, 1),
            "lease_back_to_a_s": None if back is None else round(back, 1),
            "terms": [(t.term, cluster.holder_host(t.holder), t.ticks) for t in history],
            "fenced_ticks": fenced, "refunds_asked": len(load.refund_answers),
            "refund_answers": dict(Counter(load.refund_answers.values())), "load_errors": load.errors,
            "quiet_after_heal_s": round(time.monotonic() - healed, 1), "quiet": quiet.reached,
            "checker": report.figures, "unexpected_exits": cluster.sup.unexpected_exits(),
        }
        record(artifacts, "partition", figures)
        note(f"two hosts, host A cut off: {figures}")
        holders = [cluster.holder_host(t.holder) for t in history]
        assert moved is not None and moved <= MOVE_BOUND, figures
        assert back is not None, figures
        assert "b" in holders and holders[-1] == "a" and holders.index("b") > holders.index("a"), figures
        for earlier, later in itertools.pairwise(history):
            assert earlier.last_tick_at is None or earlier.last_tick_at <= later.started_at, (earlier, later)
        assert not cluster.sup.unexpected_exits(), figures
        assert all(cluster.sup.pid(n) == pid for n, pid in pids.items()), figures  # nothing restarted
        assert not load.errors, figures
        assert quiet.reached, quiet.status
        assert report.ok, report.summary()
        assert len(load.refunded) >= 6, figures  # refunds were part of the load, before and during the cut
    finally:
        if cluster is not None:
            cluster.stop()
        if pg is not None:
            pg.stop()
        if redis is not None and redis.process is not None:
            redis.process.kill()
            redis.process.wait(timeout=10)
        hosts.close()


def current(cluster: TwoHostCluster) -> tuple[int, str | None]:
    try:
        with read(cluster.rt.engine) as conn:
            return leadership.current(conn)
    except sa.exc.SQLAlchemyError:
        return 0, None


def terms(cluster: TwoHostCluster) -> list[sa.Row[tuple[int, str, object, object, int]]]:
    with read(cluster.rt.engine) as conn:
        return list(conn.execute(sa.select(scheduler_terms.c.term, scheduler_terms.c.holder,
                                           scheduler_terms.c.started_at, scheduler_terms.c.last_tick_at,
                                           scheduler_terms.c.ticks).order_by(scheduler_terms.c.term)))
