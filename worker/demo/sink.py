"""A minimal notification receiver for the gateway-level demo: verify, record, acknowledge."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..gateway.signing import Verifier
from ..gateway.wire import ACK_BODY, WireFormatError, loads_object


class NotificationSink:
    """Records every notification whose signature verifies; refuses the rest with 401."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.received: list[dict[str, Any]] = []
        self.rejected = 0
        self._arrived = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> NotificationSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, key: str, value: str, *, timeout: float = 10.0) -> dict[str, Any] | None:
        """The first recorded notification whose ``data[key] == value``."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._find(key, value) is not None, timeout=timeout)
            return self._find(key, value)

    def _find(self, key: str, value: str) -> dict[str, Any] | None:
        return next((n for n in self.received if n.get("data", {}).get(key) == value), None)

    def _record(self, body: bytes, sign: str | None) -> int:
        if not self.verifier.verify(body, sign):
            self.rejected += 1
            return 401
        try:
            parsed = loads_object(body)
        except WireFormatError:
            return 400
        with self._arrived:
            self.received.append(parsed)
            self._arrived.notify_all()
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                status = sink._record(self.rfile.read(length), self.headers.get("sign"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(ACK_BODY if status == 200 else b'{"code":"REJECTED"}')

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
