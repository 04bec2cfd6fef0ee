"""Merchant event consumers that record every delivery, for the checker's exactly-once count.

Two kinds, matching the product's two outlets:

- ``WebhookSink``: an HTTP endpoint (``CHECUS_EVENT_WEBHOOK_URL``) that verifies the Standard
  Webhooks signature and records each delivery; ``failure_rate`` answers some deliveries 500 so
  the outbox's retry path is exercised too (a refused delivery is not recorded as received).
- ``record_event``: a ``CHECUS_EVENT_HANDLER`` callable that appends one JSON line per delivery to
  the file named by ``CHECUS_RELIABILITY_EVENT_LOG`` (every process appends to the same file).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

EVENT_LOG_VARIABLE = "CHECUS_RELIABILITY_EVENT_LOG"


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    type: str
    body: str  # canonical JSON of the event, to prove a repeated id carries the same event
    at: float


def _canonical(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)


def record_event(event: dict[str, Any]) -> None:
    """``CHECUS_EVENT_HANDLER=tests.reliability.sinks:record_event``."""
    path = os.environ[EVENT_LOG_VARIABLE]
    line = json.dumps({"event_id": event["event_id"], "type": event["type"], "body": _canonical(event),
                       "at": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class FileSink:
    """The in-process face of ``record_event``: same file, same format."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()

    def __call__(self, event: dict[str, Any]) -> None:
        previous = os.environ.get(EVENT_LOG_VARIABLE)
        os.environ[EVENT_LOG_VARIABLE] = str(self.path)
        try:
            record_event(event)
        finally:
            if previous is None:
                os.environ.pop(EVENT_LOG_VARIABLE, None)
            else:
                os.environ[EVENT_LOG_VARIABLE] = previous

    def deliveries(self) -> list[Delivery]:
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                raw = json.loads(line)
                out.append(Delivery(raw["event_id"], raw["type"], raw["body"], raw["at"]))
        return out


class WebhookSink:
    """A threaded HTTP server on loopback that verifies and records merchant event webhooks."""

    def __init__(self, secret: str, *, failure_rate: float = 0.0, seed: int = 0, host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.verifier = Webhook(secret)
        self.failure_rate = failure_rate
        self.rng = random.Random(f"{seed}:sink")  # noqa: S311 - fault draws, not secrets
        self.lock = threading.Lock()
        self.received: list[Delivery] = []
        self.refused = 0
        self.bad_signatures = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                status = sink.accept(body, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="event-sink", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/events"

    def start(self) -> WebhookSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def accept(self, body: bytes, headers: dict[str, str]) -> int:
        try:
            event = self.verifier.verify(body, headers)
        except Exception:  # noqa: BLE001 - any verification failure is a refusal
            with self.lock:
                self.bad_signatures += 1
            return 401
        with self.lock:
            if self.rng.random() < self.failure_rate:
                self.refused += 1
                return 500
            self.received.append(Delivery(str(event["event_id"]), str(event["type"]), _canonical(event),
                                          time.time()))
        return 204

    def deliveries(self) -> list[Delivery]:
        with self.lock:
            return list(self.received)
