"""Limits against slow and large clients, below the receiver's ASGI app and around it.

uvicorn's httptools protocol, which ``checus-worker web`` runs, sets no limit on the request
line or the headers (llhttp streams them and uvicorn appends them all to the request), and no
timer runs between a connection's accept and its request's last header byte: a client that
connects and sends nothing, or trickles a header a byte at a time, holds its connection for
ever, and enough of them reach ``limit_concurrency`` so that every other request gets 503.
Nor does anything bound how long a request body may take once the app reads it.

Two pieces close that, each configurable (``Settings.receiver_*``):

- ``GuardedHttpToolsProtocol`` (the HTTP protocol class given to uvicorn): the request line
  and headers must arrive within ``header_timeout`` of the accept (or of the previous
  response) and fit in ``max_header_bytes`` and ``MAX_HEADERS`` fields. Past the size it
  answers 414 (still in the request line) or 431, past the time 408 (a silent connection is
  simply closed), and closes the connection, having read at most ``max_header_bytes`` of the
  head: what the client still sends is dropped unparsed. The app never sees such a request.
- ``BodyDeadline`` (ASGI middleware around the receiver): a body must be read whole within
  ``body_timeout`` of its headers, else 408 and the connection closed; the app only sees a
  disconnect, so nothing is verified, kept or enqueued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = structlog.get_logger("worker.receiver.slow_clients")
MAX_HEADERS = 100  # Apache's LimitRequestFields; a Checus notification sends fewer than 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    header_timeout: float = 10.0  # accept (or previous response) → last header byte
    max_header_bytes: int = 16 * 1024  # request line and headers, as sent
    max_headers: int = MAX_HEADERS


def refusal(status: int, reason: str, extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response in the receiver's refusal shape, closing the connection."""
    body = b'{"code":"FAIL","msg":"' + reason.encode() + b'"}'
    headers = [*extra_headers, (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    return STATUS_LINE[status] + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request's head.

    ``uvicorn --http worker.receiver.slow_clients:GuardedHttpToolsProtocol`` gives the default limits;
    ``guarded_protocol(limits)`` a subclass with others.
    """

    limits: ClassVar[ClientLimits] = ClientLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between requests or reading a request line and headers
        self._head_bytes = 0
        self._line_ended = False  # the request line is whole (past it, too large is 431, not 414)
        self._fields = 0
        self._heads = 0  # heads parsed whole on this connection
        self._answered = False  # a refusal is out: drop whatever else comes

    # -- the head's size --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        if self._in_head:
            room = self.limits.max_header_bytes - self._head_bytes
            head, rest = data[:room], data[room:]
            self._head_bytes += len(head)
            self._line_ended = self._line_ended or b"\n" in head.lstrip(b"\r\n")
            if rest:  # more than the head may hold: parse what fits; the head must be whole by then
                heads = self._heads
                super().data_received(head)
                if self._answered or self.transport.is_closing():
                    return
                if self._heads == heads:
                    self._refuse(431 if self._line_ended else 414, "head_too_large")
                    return
                self.data_received(rest)
                return
        super().data_received(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._answered:
            return
        self._fields += 1
        if self._fields > self.limits.max_headers:
            self._refuse(431, "too_many_headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._answered:
            return
        self._in_head = False
        self._heads += 1
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            return
        self._in_head, self._head_bytes, self._line_ended, self._fields = True, 0, False, 0
        super().on_message_complete()

    # -- the head's deadline ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a queued request's head is already whole
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self._in_head and self._head_bytes > 0:
            self._refuse(408, "request_timeout")
        else:  # silent since the accept or the last response, or still sending a body nobody reads
            log.info("receiver.client_cut", reason="idle" if self._in_head else "unread_body",
                     seconds=self.limits.header_timeout)
            self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        self._answered = True
        self._cancel_head_timer()
        log.info("receiver.client_cut", reason=reason, status=status, head_bytes=self._head_bytes,
                 fields=self._fields)
        self.transport.write(refusal(status, reason, self.server_state.default_headers))
        self.transport.close()


def guarded_protocol(limits: ClientLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``) for these limits."""
    return type("GuardedHttpTools", (GuardedHttpToolsProtocol,), {"limits": limits})


class BodyDeadline:
    """ASGI middleware: a request's body must reach the app within ``seconds`` of its headers.

    Past the deadline the client gets 408 with ``connection: close`` and the app a disconnect
    (Starlette raises ``ClientDisconnect`` while reading, so the endpoint stops there); what the
    app would still send is dropped. Once the body is whole, the deadline no longer applies.
    """

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        state = {"started": False, "timed_out": False, "body_done": False}

        async def timed_receive() -> Message:
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                state["timed_out"] = True
                await self._time_out(scope, send, answer=not state["started"])
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def tracked_send(message: Message) -> None:
            if state["timed_out"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except ClientDisconnect:
            if not state["timed_out"]:
                raise

    async def _time_out(self, scope: Scope, send: Send, *, answer: bool) -> None:
        log.info("receiver.client_cut", reason="body_timeout", path=scope.get("path"), seconds=self.seconds)
        if not answer:
            return
        body = b'{"code":"FAIL","msg":"request_timeout"}'
        await send({"type": "http.response.start", "status": 408,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
