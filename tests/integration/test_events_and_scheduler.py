"""Merchant events (at-least-once, Standard Webhooks signatures) and the scheduler (lease, due polls, sweep)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import Redis
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.config import Settings
from worker.devtools.serving import serve_in_thread
from worker.flows.events import WebhookSink, deliver_events
from worker.runtime import Runtime, Timers
from worker.runtime.queueing import make_queue
from worker.scheduler import Scheduler
from worker.store import outbox, repo
from worker.store.db import create_engine, read, write
from worker.store.migrate import upgrade
from worker.store.schema import orders

SECRET = "whsec_" + base64.b64encode(b"event-secret-for-tests-0123456789").decode()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def migrated_runtime(redis_url: str, database_url: str, clock: Callable[[], datetime]) -> Iterator[Runtime]:
    """A runtime on a migrated store, for the scheduler's tests (this file's and the fence's)."""
    settings = Settings.from_env({"REDIS_URL": redis_url, "DATABASE_URL": database_url, "CHECUS_APP_ID": "A",
                                  "CHECUS_MERCHANT_NO": "M"})
    engine = create_engine(database_url)
    upgrade(engine)
    yield Runtime(settings=settings, engine=engine, redis=Redis.from_url(redis_url), timers=Timers(), clock=clock)
    engine.dispose()


@pytest.fixture
def runtime(redis_url: str, database_url: str) -> Iterator[Runtime]:
    yield from migrated_runtime(redis_url, database_url, lambda: NOW)


class Receiver:
    """A merchant endpoint that verifies Standard Webhooks signatures and can be told to fail."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.fail_next = 0
        self.webhook = Webhook(SECRET)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if self.fail_next:
            self.fail_next -= 1
            return Response(status_code=503)
        self.accepted.append(self.webhook.verify(body, dict(request.headers)))
        return Response(status_code=204)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    target = Receiver()

    async def health(_r: Request) -> Response:
        return Response("ok")

    app = Starlette(routes=[Route("/events", target.endpoint, methods=["POST"]), Route("/h", health)])
    served = serve_in_thread(app)
    yield target, served.base_url + "/events"
    served.stop()


def add_event(rt: Runtime, event_id: str) -> None:
    with write(rt.engine) as conn:
        outbox.add(conn, event_id=event_id, type="payment.succeeded", now=NOW,
                   payload={"event_id": event_id, "type": "payment.succeeded", "out_trade_no": "O1"})


def test_events_are_signed_delivered_and_retried(runtime: Runtime, receiver: tuple[Receiver, str]) -> None:
    """A failing consumer gets the event again later; a verified delivery marks it delivered once."""
    target, url = receiver
    runtime.event_sinks = (WebhookSink(url, SECRET),)
    add_event(runtime, "payment.succeeded:order:O1:2")
    target.fail_next = 1
    assert deliver_events(runtime) == 0 and target.accepted == []
    assert deliver_events(runtime) == 0  # not due yet: retried on the backoff ladder
    runtime.clock = lambda: NOW + timedelta(minutes=1)
    assert deliver_events(runtime) == 1
    assert [e["event_id"] for e in target.accepted] == ["payment.succeeded:order:O1:2"]
    assert deliver_events(runtime) == 0


def test_a_tampered_event_fails_verification(receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    sink = WebhookSink(url, "whsec_" + base64.b64encode(b"another-secret-entirely-0123456").decode())
    with pytest.raises(Exception, match="500"):
        sink({"event_id": "e1", "type": "payment.succeeded"})
    assert target.accepted == []


def new_order(rt: Runtime, no: str, *, state: str = "PENDING", next_poll_at: datetime | None) -> int:
    with write(rt.engine) as conn:
        return repo.insert_order(conn, {
            "out_trade_no": no, "kind": "hosted", "state": state, "amount_minor": 100, "currency": "USD",
            "country": "US", "user_id": "u1", "subject": "s", "tokenize": False, "app_id": "A", "merchant_no": "M",
            "request_json": "{}", "created_at": NOW, "updated_at": NOW, "next_poll_at": next_poll_at,
        })


def test_scheduler_enqueues_only_due_non_terminal_polls_and_claims_them(runtime: Runtime) -> None:
    due = new_order(runtime, "DUE", next_poll_at=NOW - timedelta(seconds=1))
    new_order(runtime, "LATER", next_poll_at=NOW + timedelta(minutes=5))
    new_order(runtime, "DONE", state="SUCCESS", next_poll_at=None)  # terminal: polled only if a query is owed
    scheduler = Scheduler(runtime, sweep_every=3600)
    report = scheduler.tick()
    assert report.leader and report.orders == 1
    queue = make_queue(runtime.redis)
    assert queue.job_ids == [f"poll-order-{due}"]
    assert scheduler.tick().orders == 0  # claimed: not enqueued again until the claim expires
    with read(runtime.engine) as conn:
        order = repo.get_order(conn, due)
    assert order is not None and order.next_poll_at == NOW + timedelta(seconds=runtime.timers.poll_claim)


def test_only_one_scheduler_leads(runtime: Runtime) -> None:
    first, second = Scheduler(runtime), Scheduler(runtime)
    assert first.tick().leader and not second.tick().leader
    first.lease.release()
    assert second.tick().leader


def test_sweeper_reenqueues_inbox_rows_no_job_finished(runtime: Runtime) -> None:
    from worker.store import inbox

    with write(runtime.engine) as conn:
        entry_id, _, _ = inbox.record(conn, kind="payment", ref="O1", key="k1", body=b"{}", sign="s",
                                      now=NOW - timedelta(minutes=10))
    Scheduler(runtime, sweep_every=0).tick()
    assert f"apply-inbox-{entry_id}" in make_queue(runtime.redis).job_ids


def test_poll_schedule_lives_in_sql(runtime: Runtime) -> None:
    """A Redis loss forgets queued jobs, not the schedule: the next tick enqueues the poll again."""
    order_id = new_order(runtime, "SURVIVES", next_poll_at=NOW - timedelta(seconds=1))
    runtime.redis.flushall()
    with write(runtime.engine) as conn:
        conn.execute(orders.update().values(next_poll_at=NOW - timedelta(seconds=1)))
    assert Scheduler(runtime).tick().orders == 1
    assert make_queue(runtime.redis).job_ids == [f"poll-order-{order_id}"]
