"""Merchant events from the outbox: at-least-once, each with a stable event id.

Two kinds of consumer, both optional: a Python callable (``CHECUS_EVENT_HANDLER=module:function``)
and an HTTP endpoint (``CHECUS_EVENT_WEBHOOK_URL``) signed like Standard Webhooks (headers
``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<HMAC-SHA256>`` with
``CHECUS_EVENT_WEBHOOK_SECRET``), so receivers can verify with any Standard Webhooks library.
An event is marked delivered only when every consumer accepted it; a failure is retried on a
backoff ladder. Consumers must de-duplicate by ``event_id``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import simplejson
import structlog
from standardwebhooks.webhooks import Webhook

from worker.runtime import Runtime
from worker.runtime.crashpoints import crash_point
from worker.store import outbox
from worker.store.db import read, write

log = structlog.get_logger("worker.flows.events")
Sink = Callable[[dict[str, Any]], None]
BATCH = 200


class WebhookSink:
    """POSTs one event as JSON, signed with the Standard Webhooks scheme; 2xx means accepted."""

    def __init__(self, url: str, secret: str, *, http: httpx.Client | None = None) -> None:
        self.url = url
        self.signer = Webhook(secret)
        self.http = http or httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))

    def __call__(self, event: dict[str, Any]) -> None:
        body = simplejson.dumps(event, separators=(",", ":"), sort_keys=True)
        stamp = datetime.fromtimestamp(int(time.time()), UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": str(event["event_id"]),
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": self.signer.sign(str(event["event_id"]), stamp, body),
        }
        self.http.post(self.url, content=body.encode(), headers=headers).raise_for_status()


def load_callable(path: str) -> Sink:
    """``package.module:function`` → the function (the merchant's in-process consumer)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:function, got {path!r}")
    sink: Sink = getattr(importlib.import_module(module_name), attribute)
    return sink


def deliver_events(rt: Runtime) -> int:
    """Deliver every due event to every sink; returns how many were delivered."""
    rt.enqueuer.woken("deliver-events")
    if not rt.event_sinks:
        return 0
    delivered = 0
    with read(rt.engine) as conn:
        due = outbox.due(conn, now=rt.clock(), limit=BATCH)
    for event in due:
        try:
            for sink in rt.event_sinks:
                sink(event.payload)
        except Exception as exc:  # noqa: BLE001 - a consumer's failure of any kind means "retry later"
            ladder = rt.timers.event_retry
            retry_in = timedelta(seconds=ladder[min(event.attempts, len(ladder) - 1)])
            with write(rt.engine) as conn:
                outbox.mark_failed(conn, event.id, error=type(exc).__name__, retry_in=retry_in, now=rt.clock())
            log.warning("event.delivery_failed", event_id=event.event_id, error=type(exc).__name__)
            continue
        crash_point("after_event_delivery")
        with write(rt.engine) as conn:
            outbox.mark_delivered(conn, event.id, now=rt.clock())
        delivered += 1
        log.info("event.delivered", event_id=event.event_id, type=event.type)
    return delivered


def configured_sinks(settings: Any) -> tuple[Sink, ...]:
    """The consumers named in the settings (callable and/or webhook), in that order."""
    sinks: list[Sink] = []
    if settings.event_handler:
        sinks.append(load_callable(settings.event_handler))
    if settings.event_webhook_url:
        sinks.append(WebhookSink(settings.event_webhook_url, settings.event_webhook_secret or ""))
    return tuple(sinks)
