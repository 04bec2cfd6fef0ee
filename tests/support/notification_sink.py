"""``NotificationSink``: a loopback HTTP server on its own thread that records every POST (raw body,
``sign`` header, whether that verifies) and answers from a script, e.g. HTTP 500 twice and then
the ack, so the simulator's retry ladder can be watched from the outside.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.gateway.signing import Verifier
from worker.gateway.wire import ACK_BODY, loads_object


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """One notification as it arrived."""

    path: str
    raw: bytes
    sign: str | None
    content_type: str | None
    signature_ok: bool
    answered: int
    arrived: float = field(default_factory=time.monotonic)

    @property
    def body(self) -> dict[str, Any]:
        return loads_object(self.raw)


class NotificationSink:
    """A loopback receiver. ``answers`` are (status, body) pairs used in turn, then ``default``;
    ``delays`` hold the answers back (seconds, in turn), to make the sender time out."""

    def __init__(
        self,
        platform_public_key: str,
        *,
        answers: Iterable[tuple[int, bytes]] = (),
        default: tuple[int, bytes] = (200, ACK_BODY),
        delays: Iterable[float] = (),
    ) -> None:
        self.verifier = Verifier.from_values([platform_public_key], setting="platform_public_key")
        self._answers, self._default, self._delays = list(answers), default, list(delays)
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="sim-sink", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/notify"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least ``count`` notifications arrived; raise after ``timeout``."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(f"{len(self._received)} of {count} notifications arrived")
            return list(self._received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_answer(self) -> tuple[int, bytes, float]:
        with self._lock:
            status, body = self._answers.pop(0) if self._answers else self._default
            return status, body, self._delays.pop(0) if self._delays else 0.0

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)
            self._lock.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, reply, delay = sink._next_answer()
                sign = self.headers.get("sign")
                sink._record(
                    Received(
                        path=self.path,
                        raw=raw,
                        sign=sign,
                        content_type=self.headers.get("content-type"),
                        signature_ok=sink.verifier.verify(raw, sign),
                        answered=status,
                    )
                )
                time.sleep(delay)
                with contextlib.suppress(OSError):  # the sender may have given up waiting
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``received`` instead of stderr."""

        return Handler
