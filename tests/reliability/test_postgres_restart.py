"""PostgreSQL crashed (``pg_ctl -m immediate``) and started again under load: the receiver answers
503 while the store is gone (nothing is acknowledged that is not stored), the pools reconnect
(pre-ping), no role exits or restarts, and every acknowledged notification is applied.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from worker.devtools.demo.redis_server import RedisServer

from .cluster import Cluster, ClusterSpec
from .conftest import note
from .notifier import PaymentNotifier
from .private_postgres import PrivatePostgres
from .test_recovery import _processed, assert_converged, record, wait_for

DOWN = 5.0
RECEIVER_BOUND = 10.0  # after the store is back, the receiver acknowledges again within this
WORKER_BOUND = 40.0  # and everything it acknowledged is applied within this


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_postgres_crash_under_load_loses_nothing_acknowledged(own_redis: RedisServer, artifacts: Path) -> None:
    pg = PrivatePostgres().start()
    spec = ClusterSpec(time_scale=0.01, fork_workers=1, simple_workers=2, sim_seed=41,
                       refund_auto_complete_seconds=None, http_read_timeout=5)
    cluster = Cluster(root=artifacts, redis=own_redis, database_url=pg.url, spec=spec)
    try:
        cluster.start()
        numbers = [f"PGR{i:02d}" for i in range(40)]
        for no in numbers:
            cluster.service.create_card_payment(out_trade_no=no, amount=Decimal("3.00"), currency="USD",
                                                user_id="u5", subject="crash",
                                                front_callback_url="https://shop.test/return")
        for no in numbers:
            assert cluster.sim.complete_order(no, "SUCCESS", notify=False) == 200
        pids = {name: cluster.sup.pid(name) for name in cluster.sup.procs}
        notifier = PaymentNotifier(cluster, numbers, Decimal("3.00"))
        notify_next, answers = notifier.next, notifier.answers

        assert notify_next() == 200
        pg.crash()
        crashed = time.monotonic()
        while time.monotonic() - crashed < DOWN:
            notify_next()
            time.sleep(0.5)
        down_until = time.monotonic()
        pg.start()
        back = time.monotonic()
        first_ack = None
        for _ in range(40):
            if notify_next() == 200:
                first_ack = answers[-1].answered - back
                break
            time.sleep(0.25)
        while_down = [a.status for a in answers[1:] if crashed <= a.answered <= down_until]
        acked = notifier.acked()
        applied = wait_for(lambda: all(_processed(cluster, no) for no in acked), WORKER_BOUND)
        quiet = cluster.wait_quiet(180)
        figures = {"down_s": round(back - crashed, 1), "answers_while_down": while_down,
                   "receiver_first_2xx_after_s": None if first_ack is None else round(first_ack, 2),
                   "acked_applied_within_s": None if applied is None else round(applied, 1),
                   "quiet_after_s": round(quiet.seconds, 1), "unexpected_exits": cluster.sup.unexpected_exits()}
        record(artifacts, "postgres", figures)
        note(f"postgres crash and restart: {figures}")
        assert while_down and all(status != 200 for status in while_down), figures
        assert first_ack is not None and first_ack <= RECEIVER_BOUND, figures
        assert applied is not None, figures
        assert not cluster.sup.unexpected_exits(), figures
        assert all(cluster.sup.running(n) and cluster.sup.pid(n) == pid for n, pid in pids.items()), figures
        assert quiet.reached, quiet.status
        assert_converged(cluster, set(numbers))
    finally:
        cluster.stop()
        pg.stop()
