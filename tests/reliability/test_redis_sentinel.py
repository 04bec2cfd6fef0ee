"""Redis through Sentinel: kill -9 the primary under load; the sentinels promote the replica and
every role (receiver, forking and simple workers, scheduler) follows without a restart.

Real processes: a primary, a replica, three sentinels (``sentinel.py``), the simulator, the
receiver, workers, a scheduler and PostgreSQL. While the sentinels fail over, the receiver answers
503 to new notifications (never 2xx: nothing is acknowledged that is not durably enqueued), Checus
would retry them; once the replica is primary, the same processes carry on. The checker then finds
every payment and every refund in the state the gateway holds. Refunds are in the load too: ten paid
orders get two refunds each just before the kill (the second waits its turn), and the simulator
settles each about 1 s after it is sent and notifies it, so their sends, notifications and polls
cross the failover. Figures are printed in the harness summary.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from .cluster import Cluster, ClusterSpec
from .conftest import note
from .notifier import PaymentNotifier
from .sentinel import SentinelSet
from .test_recovery import _processed, assert_converged, record, wait_for

FAILOVER_BOUND = 15.0  # down-after 1 s + election + promotion, generously on a loaded 2-core machine
RECEIVER_BOUND = 10.0  # after the promotion, the receiver acknowledges again within this
WORKER_BOUND = 30.0  # and what it acknowledged is applied within this (rq's reconnect backoff)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_killed_primary_is_replaced_and_every_role_follows_without_a_restart(pg_url: str, artifacts: Path) -> None:
    sentinels = SentinelSet(artifacts / "sentinel").start()
    spec = ClusterSpec(time_scale=0.01, fork_workers=2, simple_workers=1, sim_seed=23,
                       sim_faults={"endpoints": {"orderQuery": {"delay_seconds": 0.3}}},
                       refund_auto_complete_seconds=100.0, http_read_timeout=5, redis_env=sentinels.env)
    cluster = Cluster(root=artifacts, redis=sentinels.primary, database_url=pg_url, spec=spec)
    try:
        cluster.start()
        refunded = [f"SENR{i:02d}" for i in range(10)]  # paid before the kill, refunded across it
        for no in refunded:
            cluster.service.create_card_payment(out_trade_no=no, amount=Decimal("7.00"), currency="USD",
                                                user_id="u3", subject="failover refunds",
                                                front_callback_url="https://shop.test/return")
            assert cluster.sim.complete_order(no, "SUCCESS") == 200
        assert wait_for(lambda: all(cluster.state_of(no) == "SUCCESS" for no in refunded), 60) is not None
        numbers = [f"SEN{i:02d}" for i in range(40)]
        for no in numbers:
            cluster.service.create_card_payment(out_trade_no=no, amount=Decimal("7.00"), currency="USD",
                                                user_id="u3", subject="failover",
                                                front_callback_url="https://shop.test/return")
        for no in numbers:  # settled silently: polls or the notifications below find it
            assert cluster.sim.complete_order(no, "SUCCESS", notify=False) == 200
        pids = {name: cluster.sup.pid(name) for name in cluster.sup.procs}
        notifier = PaymentNotifier(cluster, numbers, Decimal("7.00"))
        notify_next, answers = notifier.next, notifier.answers

        assert notify_next() == 200  # through the first primary
        refund_nos = []
        for no in refunded:  # 2.00 + 3.00 of 7.00: the second waits its turn behind the first
            for part, amount in (("R1", "2.00"), ("R2", "3.00")):
                cluster.service.refund(no, Decimal(amount), out_refund_no=f"{no}_{part}")
                refund_nos.append(f"{no}_{part}")
        time.sleep(0.5)
        killed = time.monotonic()
        sentinels.primary.kill9()
        promoted, still_old = None, killed  # still_old: the last moment the sentinels named the dead primary
        while time.monotonic() - killed < FAILOVER_BOUND + 5:
            notify_next()
            if sentinels.master_port() == sentinels.replica_port:
                promoted = time.monotonic() - killed
                break
            still_old = time.monotonic()
            time.sleep(0.3)
        first_ack = None
        for _ in range(40):
            if notify_next() == 200:
                first_ack = answers[-1].answered - killed
                break
            time.sleep(0.25)
        during = [a.status for a in answers[1:] if a.answered <= still_old]  # answered while no primary was named
        acked = notifier.acked()
        applied = wait_for(lambda: all(_processed(cluster, no) for no in acked), WORKER_BOUND)
        quiet = cluster.wait_quiet(180)
        figures = {"failover_s": None if promoted is None else round(promoted, 1),
                   "answers_during_failover": during,
                   "receiver_first_2xx_after_kill_s": None if first_ack is None else round(first_ack, 1),
                   "acked_applied_after_s": None if applied is None else round(applied, 1),
                   "quiet_after_s": round(quiet.seconds, 1), "unexpected_exits": cluster.sup.unexpected_exits(),
                   "refund_states": dict(Counter(_refund_state(cluster, no) for no in refund_nos))}
        record(artifacts, "sentinel", figures)
        note(f"redis sentinel failover: {figures}")
        assert promoted is not None and promoted <= FAILOVER_BOUND, figures
        assert all(status != 200 for status in during), figures  # nothing acked while no primary answered
        assert first_ack is not None and first_ack - promoted <= RECEIVER_BOUND, figures
        assert applied is not None, figures
        assert not cluster.sup.unexpected_exits(), figures
        assert all(cluster.sup.running(n) and cluster.sup.pid(n) == pid for n, pid in pids.items()), figures
        assert quiet.reached, quiet.status
        assert_converged(cluster, set(numbers) | set(refunded))  # refunds of these orders included
        assert figures["refund_states"] == {"REFUND_SUCCESS": len(refund_nos)}, figures
    finally:
        cluster.stop()
        sentinels.stop()


def _refund_state(cluster: Cluster, out_refund_no: str) -> str | None:
    view = cluster.service.get_refund(out_refund_no)
    return view.refund.state if view else None
