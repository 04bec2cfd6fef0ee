"""The cost of a duplicate: re-send notifications already acknowledged and count what each costs.

Why Redis ``INFO commandstats``: it counts every command any client sent, so it needs no change
to the product; the receiver sends no pipelines or transactions on this path, so commands are
round trips. Idle workers and the scheduler send commands of their own all the time (heartbeats,
``BLPOP`` timeouts, the leader lease), so that background is measured over an idle window just
before and subtracted, pro rata. The receiver's SQL: on PostgreSQL its connections carry an
``application_name``, and ``pg_stat_activity`` shows whether any of them started a statement
during the phase; on SQLite statements are not observable from outside, so only the inbox row
count (no write) is checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from redis import Redis

from worker.devtools.bench.applied import inbox_rows
from worker.devtools.bench.loadgen import LoadResult, run_wrk
from worker.devtools.bench.payloads import resend_plan
from worker.devtools.bench.phases import Bench, time_limit
from worker.devtools.bench.stack import WEB_APPLICATION_NAME
from worker.receiver.app import PAYMENT_PATH

BACKGROUND_SECONDS = 2.0


def command_calls(redis: Redis) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


@dataclass(kw_only=True)
class DuplicateCost:
    load: LoadResult
    commands_per_request: dict[str, float] = field(default_factory=dict)  # background subtracted
    inbox_rows_added: int = 0
    sql_statements: int | None = None  # receiver statements seen (PostgreSQL), None when not observable

    @property
    def redis_commands(self) -> float:
        return sum(self.commands_per_request.values())

    @property
    def rate(self) -> float:
        return len(self.load.ok) / self.load.span_seconds if self.load.span_seconds else 0.0


def _receiver_statements_since(b: Bench, since: datetime) -> int | None:
    if b.stack.engine.dialect.name != "postgresql":
        return None
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND query_start > :since")
    with b.stack.engine.connect() as conn:
        return int(conn.execute(query, {"name": WEB_APPLICATION_NAME, "since": since}).scalar_one())


def duplicate_phase(b: Bench, acknowledged: list[int]) -> DuplicateCost:
    """Re-send ``acknowledged`` (orders whose notification was acked and applied) once each."""
    plan = resend_plan(acknowledged)
    directory, threads = b.write("duplicates", plan)
    redis = b.stack.redis
    idle_before = command_calls(redis)
    time.sleep(BACKGROUND_SECONDS)
    idle_after = command_calls(redis)
    background = {k: v / BACKGROUND_SECONDS for k, v in _delta(idle_after, idle_before).items()}
    background.pop("info", None)  # the idle window's INFO was ours, not background
    rows_before, since = inbox_rows(b.stack.engine), datetime.now(UTC)
    before, started = command_calls(redis), time.monotonic()
    done = b.ui.task("duplicates: acknowledged", len(plan))
    load = run_wrk(b.stack.receiver_url + PAYMENT_PATH, directory, threads=threads, planned=len(plan),
                   base_us=b.base_us, time_limit=time_limit(len(plan), 0), on_progress=done)
    after, wall = command_calls(redis), time.monotonic() - started
    done(len(load.acks))
    requests = max(1, len(load.ok))
    per_request = {}
    for command, calls in _delta(after, before).items():
        own = 1 if command == "info" else 0  # the INFO that took the "after" snapshot
        value = (calls - own - background.get(command, 0.0) * wall) / requests
        if value >= 0.005:
            per_request[command] = round(value, 3)
    return DuplicateCost(load=load, commands_per_request=per_request,
                         inbox_rows_added=inbox_rows(b.stack.engine) - rows_before,
                         sql_statements=_receiver_statements_since(b, since))
