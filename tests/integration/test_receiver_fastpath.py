"""The duplicate fast path: a redelivery of a kept notification is acked for one Redis command and no SQL.

Checus retries until it gets the ack, and replays cluster (six attempts, duplicates of
duplicates), so the cheapest request must be the commonest repeat. Commands are counted twice:
by the receiver's own client, and on the server (``INFO commandstats`` after ``CONFIG RESETSTAT``,
which also sees pipelines and any other client). SQL is counted by an engine event.

The ``rig`` (its own redis-server, ``private_redis``) comes from ``conftest.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.integration.test_receiver_harness import ACK, Rig, payment_note
from worker.demo.redis_server import RedisServer


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
    rig.redis.commands.clear()
    with SqlCounter(rig.rt.engine) as sql:
        response = rig.post(raw, sign=sign)
    assert (response.status_code, response.content) == (200, ACK)
    assert rig.redis.commands == ["EXISTS"]
    assert server_commands(admin) == {"config|resetstat": 1, "exists": 1}
    assert sql.statements == [] and sql.checkouts == 0
    assert rig.snapshot() == before
