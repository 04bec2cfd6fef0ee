"""PostgreSQL behind PgBouncer in transaction pooling mode: every role, real processes.

Transaction pooling hands each transaction whichever server connection is free, so nothing may
hold session state across transactions: no server-side prepared statements (psycopg 3 prepares a
statement after its fifth execution unless ``DATABASE_PREPARED_STATEMENTS=off``), no ``SET``, no
advisory locks. Payments, notifications, polls and refunds flow through it and the checker finds
every record as the gateway holds it.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from worker.devtools.demo.redis_server import RedisServer

from .cluster import Cluster, ClusterSpec
from .conftest import note
from .pgbouncer import PgBouncer
from .test_recovery import assert_converged


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_role_works_through_pgbouncer_in_transaction_pooling(own_redis: RedisServer, pg_url: str,
                                                                   artifacts: Path) -> None:
    bouncer = PgBouncer(artifacts / "pgbouncer", pg_url).start()
    spec = ClusterSpec(time_scale=0.01, fork_workers=1, simple_workers=2, sim_seed=31,
                       refund_auto_complete_seconds=20.0, extra_env={"DATABASE_PREPARED_STATEMENTS": "off"})
    cluster = Cluster(root=artifacts, redis=own_redis, database_url=bouncer.url, spec=spec)
    try:
        began = time.monotonic()
        cluster.start()
        numbers = [f"PGB{i:02d}" for i in range(30)]
        for no in numbers:
            cluster.service.create_card_payment(out_trade_no=no, amount=Decimal("20.00"), currency="USD",
                                                user_id="u4", subject="pooled",
                                                front_callback_url="https://shop.test/return")
        for i, no in enumerate(numbers):  # notified (most) or settled silently (every fifth: polls find it)
            assert cluster.sim.complete_order(no, "SUCCESS", notify=i % 5 != 0) == 200
        assert cluster.wait_quiet(120).reached
        for no in numbers[:10]:
            cluster.service.refund(no, Decimal("5.00"), out_refund_no=f"{no}_R1")
            cluster.service.refund(no, Decimal("5.00"), out_refund_no=f"{no}_R2")
        assert_converged(cluster, set(numbers))
        logs = [path.read_text(errors="replace") for path in sorted(cluster.sup.log_dir.glob("*.log"))]
        figures = {"records": len(numbers) + 20, "seconds": round(time.monotonic() - began, 1),
                   "prepared_statement_errors": sum(text.count("prepared statement") for text in logs),
                   "unexpected_exits": cluster.sup.unexpected_exits()}
        note(f"pgbouncer transaction pooling: {figures}")
        assert figures["prepared_statement_errors"] == 0, figures
        assert not cluster.sup.unexpected_exits(), figures
    finally:
        cluster.stop()
        bouncer.stop()
