"""Notification delivery: sign, POST, judge the ack, retry on the gateway's ladder.

Theory of operation. A terminal payment or refund becomes one ``Notification`` (code, msg,
data and the URL). Attempt 1 is scheduled at once (plus any fault delay); each failed attempt
schedules the next after 30, 300, 600, 3600 and 43200 seconds times ``time_scale``, six
attempts in all, then the gateway gives up (WIRE.md §10, §16). Every attempt builds the
envelope afresh with a new ``notifyTime``, serializes it once and signs those bytes.

An attempt is acknowledged when the merchant answers HTTP 2xx with a JSON ``code`` of
``SUCCESS``; ``strict_ack`` demands HTTP 200 and exactly ``{"code":"SUCCESS","msg":"Success"}``.
Anything else (other status, other body, timeout, refused connection) is a failed delivery.
Each attempt is appended to the state's log with a digest of the body, never its signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import ssl
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import certifi
import httpx
import structlog

from worker.devtools.simulator.clock import Scheduler, VirtualClock
from worker.devtools.simulator.faults import NotifyFault
from worker.devtools.simulator.records import NotificationAttempt
from worker.devtools.simulator.state import SimulatorState
from worker.gateway.signing import Signer
from worker.gateway.wire import WireFormatError, dumps, format_time, loads_object

log = structlog.get_logger("worker.devtools.simulator")
LADDER_SECONDS = (0, 30, 300, 600, 3600, 43200)
ACK = {"code": "SUCCESS", "msg": "Success"}
NOTIFY_TYPES = {"payment": "PAYMENT", "refund": "REFUND"}


@cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one costs tens of milliseconds."""
    return ssl.create_default_context(cafile=certifi.where())


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    id: int
    kind: str
    key: str
    url: str
    code: str
    msg: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifierSettings:
    app_id: str
    merchant_no: str
    time_scale: float
    timeout_seconds: float
    strict_ack: bool


class Notifier:
    def __init__(
        self,
        *,
        settings: NotifierSettings,
        state: SimulatorState,
        clock: VirtualClock,
        scheduler: Scheduler,
        signer: Signer,
        faults: Callable[[], NotifyFault],
        rng: random.Random,
    ) -> None:
        self._s = settings
        self._state, self._clock, self._scheduler = state, clock, scheduler
        self._signer, self._faults, self._rng = signer, faults, rng
        self._ids = itertools.count(1)
        self._latest: dict[str, Notification] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._s.timeout_seconds, follow_redirects=False, verify=tls_context())

    async def stop(self) -> None:
        await self.cancel_all()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._latest.clear()

    def send(self, *, kind: str, key: str, url: str | None, code: str, msg: str, data: Mapping[str, Any]) -> None:
        """Start delivering a terminal-state notification (or drop it, if a fault says so)."""
        if url is None:
            log.info("sim.notify.skipped", kind=kind, key=key, reason="no_url")
            return
        fault = self._faults()
        if self._rng.random() < fault.drop_rate:
            self._state.record_dropped(kind, key)
            log.info("sim.notify.dropped", kind=kind, key=key)
            return
        note = Notification(id=next(self._ids), kind=kind, key=key, url=url, code=code, msg=msg, data=data)
        self._latest[key] = note
        delay = fault.delay_seconds + self._rng.uniform(0, fault.reorder_window_seconds)
        self._scheduler.after(delay, lambda: self._spawn(self._deliver(note, 1)))

    def resend(self, key: str, copies: int) -> bool:
        """Deliver the latest notification for ``key`` again, ``copies`` times, without retries."""
        note = self._latest.get(key)
        if note is None:
            return False
        self._spawn(self._copies(note, copies, "resend"))
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, note: Notification, attempt: int) -> None:
        if await self._post(note, attempt, "ladder"):
            await self._maybe_duplicate(note)
        elif attempt < len(LADDER_SECONDS):
            delay = LADDER_SECONDS[attempt] * self._s.time_scale
            self._scheduler.after(delay, lambda: self._spawn(self._deliver(note, attempt + 1)))
        else:
            log.warning("sim.notify.gave_up", kind=note.kind, key=note.key, attempts=attempt)

    async def _maybe_duplicate(self, note: Notification) -> None:
        fault = self._faults()
        if self._rng.random() < fault.duplicate_rate:
            await self._copies(note, self._rng.randint(1, max(fault.max_copies, 1)), "duplicate")

    async def _copies(self, note: Notification, copies: int, source: str) -> None:
        for copy in range(1, copies + 1):
            await self._post(note, copy, source)

    def _envelope(self, note: Notification) -> dict[str, Any]:
        return {
            "code": note.code,
            "msg": note.msg,
            "keyVersion": "1",
            "appId": self._s.app_id,
            "merchantNo": self._s.merchant_no,
            "notifyTime": format_time(self._clock.now()),
            "notifyType": NOTIFY_TYPES[note.kind],
            "data": dict(note.data),
        }

    async def _post(self, note: Notification, attempt: int, source: str) -> bool:
        raw = dumps(self._envelope(note))
        spoil = self._rng.random() < self._faults().bad_signature_rate
        headers = {"content-type": "application/json", "sign": self._signer.sign(raw + b" " if spoil else raw)}
        sent_at = self._clock.now()
        status, error, acked = await self._exchange(note.url, raw, headers)
        record = self._state.record_attempt(
            NotificationAttempt(
                id=0,
                notification_id=note.id,
                kind=note.kind,
                key=note.key,
                attempt=attempt,
                source=source,
                url=note.url,
                sent_at=sent_at,
                http_status=status,
                error=error,
                acked=acked,
                body_sha256=hashlib.sha256(raw).hexdigest(),
                signature_valid=not spoil,
            )
        )
        log.info(
            "sim.notify.attempt",
            kind=note.kind,
            key=note.key,
            attempt=attempt,
            source=source,
            attempt_id=record.id,
            http_status=status,
            error=error,
            acked=acked,
        )
        return acked

    async def _exchange(self, url: str, raw: bytes, headers: dict[str, str]) -> tuple[int | None, str | None, bool]:
        """(HTTP status, error name, acknowledged) of one POST."""
        assert self._http is not None, "the notifier is not started"
        try:
            response = await self._http.post(url, content=raw, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return None, type(exc).__name__, False
        return response.status_code, None, self._acknowledged(response)

    def _acknowledged(self, response: httpx.Response) -> bool:
        try:
            body = loads_object(response.content)
        except WireFormatError:
            return False
        if self._s.strict_ack:
            return response.status_code == 200 and body == ACK
        return 200 <= response.status_code < 300 and body.get("code") == "SUCCESS"
