"""A programmable gateway on loopback: the simulator behind a proxy that answers as told.

The simulator is the gateway's truth (what Checus did); the proxy decides what the client *reads*.
Each answer class is one way a real gateway may answer a call, including the ones our simulator
never gives: a request that took effect but whose answer is lost (reset, timeout, 5xx, a body
without ``code``, a bad signature, a code nobody documented), a refusal (with or without having
acted), and Checus's undocumented answers to a repeat (``ORDER_REPEAT`` with or without data).

Answers are planned per (endpoint, record number), consumed in order, so a poll of another
record never eats a plan; an unplanned request is passed through. ``on_taken`` runs after a
request reached the simulator and before its answer is returned: a concurrent writer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from worker.gateway.signing import Signer


@dataclass(frozen=True)
class Class:
    """One answer class: whether the request reaches the gateway, and what the client reads."""

    name: str
    taken: bool  # the request reached the gateway (and took effect where it is a send)
    kind: str  # pass | reset | timeout | status | body | bad_sign


def reply(name: str, *, taken: bool, code: str | None, data: bool = False) -> Class:
    return Class(name, taken, f"body:{code or ''}:{int(data)}")


# fmt: off
PASS = Class("accepted", True, "pass")
RESET = Class("reset_after_send", True, "reset")
TIMEOUT = Class("timeout_after_send", True, "timeout")
HTTP_502_AFTER = Class("http_502_after_send", True, "status:502")
HTTP_503_BEFORE = Class("http_503_before_send", False, "status:503")
NO_CODE = Class("no_code", True, "nocode")
BAD_SIGN = Class("bad_signature", True, "bad_sign")
UNKNOWN_CODE = reply("unknown_code", taken=True, code="NEW_CODE_NOBODY_DOCUMENTED")
UNCERTAIN = reply("system_error", taken=True, code="SYSTEM_ERROR")
REJECTED = reply("rejected_params_invalid", taken=False, code="PARAMS_INVALID")
REJECTED_SIGNED_WRONG = Class("rejected_bad_signature", False, "bad_sign_reject")
RETRY_LATER = reply("retry_later_insufficient_balance", taken=False, code="REFUND_INSUFFICIENT_BALANCE")
REPEAT_WITH_DATA = reply("order_repeat_with_data", taken=True, code="ORDER_REPEAT", data=True)
REPEAT_WITHOUT_DATA = reply("order_repeat_without_data", taken=True, code="ORDER_REPEAT")
NOT_FOUND = reply("order_not_exist", taken=False, code="ORDER_NOT_EXIST")
# fmt: on

UNREADABLE = (RESET, TIMEOUT, HTTP_502_AFTER, HTTP_503_BEFORE, NO_CODE, BAD_SIGN, UNKNOWN_CODE, UNCERTAIN,
              REJECTED_SIGNED_WRONG)
NO_CODE_BODIES = (b"{}", b'{"error":"internal"}', b'{"code":null,"msg":"?"}')
READ_TIMEOUT = 0.5  # the client's read timeout in the matrix; a "timeout" answer waits longer


def _number(endpoint: str, data: dict[str, Any]) -> str:
    if endpoint in ("refund", "refundQuery"):
        return str(data.get("outRefundNo", ""))
    if endpoint in ("removePaymentToken", "inquirePaymentToken"):
        return str(data.get("userId", ""))
    return str(data.get("outTradeNo", ""))


class GatewayProxy:
    def __init__(self, upstream: str, platform_private_key: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._signer = Signer.from_value(platform_private_key, setting="platform key")
        self._plans: dict[tuple[str, str], deque[Class]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.on_taken: Callable[[str, str], None] | None = None
        self.seen: list[tuple[str, str, str]] = []  # (endpoint, number, class) of every request
        self._http = httpx.Client(timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway-proxy", daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def plan(self, endpoint: str, number: str, *answers: Class) -> None:
        with self._lock:
            self._plans[(endpoint, number)].extend(answers)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def _next(self, endpoint: str, number: str) -> Class:
        with self._lock:
            plan = self._plans.get((endpoint, number))
            return plan.popleft() if plan else PASS

    def _handle(self, h: BaseHTTPRequestHandler) -> None:  # noqa: PLR0911 - one answer per class
        body = h.rfile.read(int(h.headers.get("Content-Length", "0")))
        endpoint = h.path.rsplit("/", 1)[-1]
        envelope = json.loads(body)
        number = _number(endpoint, envelope.get("data") or {})
        answer = self._next(endpoint, number)
        self.seen.append((endpoint, number, answer.name))
        upstream: httpx.Response | None = None
        if answer.taken:
            headers = {k: v for k, v in h.headers.items() if k.lower() in ("content-type", "sign")}
            upstream = self._http.post(self.upstream + h.path, content=body, headers=headers)
            if self.on_taken is not None:
                self.on_taken(endpoint, number)
        kind = answer.kind
        if kind == "pass":
            assert upstream is not None
            return self._send(h, upstream.status_code, upstream.content, upstream.headers.get("sign"))
        if kind == "reset":
            h.close_connection = True
            h.connection.shutdown(2)
            return None
        if kind == "timeout":
            time.sleep(READ_TIMEOUT * 2)
            h.close_connection = True
            return None
        if kind.startswith("status:"):
            return self._send(h, int(kind.split(":")[1]), b"<html>Bad gateway</html>", None, "text/html")
        if kind == "nocode":
            raw = NO_CODE_BODIES[len(self.seen) % len(NO_CODE_BODIES)]
            return self._send(h, 200, raw, self._signer.sign(raw))
        if kind == "bad_sign":
            assert upstream is not None
            return self._send(h, 200, upstream.content, _corrupt(upstream.headers.get("sign") or ""))
        if kind == "bad_sign_reject":
            raw = json.dumps({"code": "PARAMS_INVALID", "msg": "invalid"}).encode()
            return self._send(h, 200, raw, _corrupt(self._signer.sign(raw)))
        _, code, with_data = kind.split(":")
        out: dict[str, Any] = {"code": code, "msg": code.lower()}
        if with_data == "1" and upstream is not None:
            out["data"] = json.loads(upstream.content).get("data")
        raw = json.dumps(out).encode()
        return self._send(h, 200, raw, self._signer.sign(raw))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, raw: bytes, sign: str | None,
              content_type: str = "application/json") -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(raw)))
        if sign:
            h.send_header("sign", sign)
        h.end_headers()
        h.wfile.write(raw)


def _corrupt(sign: str) -> str:
    """The same length and alphabet, one block changed: decodes, does not verify."""
    if not sign:
        return "A" * 344
    flipped = "B" if sign[10] == "A" else "A"
    return sign[:10] + flipped + sign[11:]
