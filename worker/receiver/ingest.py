"""Notification ingestion: verify, parse, keep durably, enqueue, then acknowledge.

Theory of operation. Checus retries a notification until it gets the ack, so the one rule
is: acknowledge only what is durably kept. The order below makes that true:

1. verify ``sign`` over the raw bytes (401 when missing, wrong or repeated) — nothing is parsed first;
2. parse strictly and read the typed notification (400 when malformed or not ours);
3. hand it to the one group-committing writer thread (``inbox_writer``), which for its whole batch
   first asks Redis which facts were kept before (a duplicate is acknowledged from that alone, no
   SQL), then writes the raw bodies and signatures to the SQL inbox (unique on the fact): 503 if
   that fails, so Checus retries;
5. make sure a job will apply it, then mark the fact seen: the writer does it for its whole batch
   after the commit (``wakes``: under load the shards' jobs are already pending), and enqueues a
   job where none is (503 if Redis is down: the row stays and is re-enqueued by the sweeper or
   by Checus's retry);
6. acknowledge with ``{"code":"SUCCESS","msg":"Success"}``.

A notification costs a share of its batch's Redis round trips (three for new ones: check, wake,
mark); a duplicate costs one ``EXISTS`` and no SQL. The request path itself awaits no Redis call.

A notification for an order we do not know yet is kept and acknowledged like any other;
the job defers it and matches it again later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from statemachine import ORDER_TERMINAL, REFUND_TERMINAL
from worker.gateway.notifications import PaymentNotification, RefundNotification
from worker.gateway.replies import ReplyInvalid
from worker.gateway.signing import Verifier
from worker.gateway.wire import ACK_BODY, WireFormatError, loads_object
from worker.metrics import NOTIFICATIONS_RECEIVED, NOTIFICATIONS_REJECTED
from worker.receiver.inbox_writer import WAIT_SECONDS, InboxWriter, Kept, WriterDied
from worker.receiver.wakes import BatchWaker
from worker.runtime.crashpoints import crash_point
from worker.runtime.queueing import Enqueuer
from worker.store import inbox, repo
from worker.store.db import read

log = structlog.get_logger("worker.receiver.ingest")
Kind = Literal["payment", "refund"]
FRESHNESS = timedelta(hours=48)  # ≥ Checus's retry horizon (~13.3 h) plus clock skew
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    reason: str
    inbox_id: int | None = None

    @property
    def body(self) -> bytes:
        if self.status == 200:
            return ACK_BODY
        return b'{"code":"FAIL","msg":"' + self.reason.encode() + b'"}'


def sign_value(lines: Sequence[str]) -> str | None:
    """The request's ``sign``: None without the header; several ``sign`` lines combine as HTTP
    combines a repeated field (RFC 9110 §5.3, joined by ``", "``), a value no signature has.
    So a request carrying two signatures is refused whichever one is genuine, rather than
    judged on the first while a proxy in front may have read the last."""
    return ", ".join(lines) if lines else None


class Ingestor:
    """Turns one HTTP notification into a kept inbox row and a queued job, or a refusal.

    Runs on the receiver's event loop: verifying and parsing are a few tens of µs of CPU, and all
    of a notification's I/O (Redis and SQL) is the writer thread's, awaited through its future, so
    a request waiting on I/O holds no thread. Only the rare stale-notification poll hint goes to
    the thread pool.
    """

    def __init__(self, *, verifier: Verifier, engine: Engine, enqueuer: Enqueuer,
                 app_ids: frozenset[str], merchant_nos: frozenset[str], clock: Callable[[], datetime]) -> None:
        self.verifier, self.engine, self.enqueuer = verifier, engine, enqueuer
        self.app_ids, self.merchant_nos, self.clock = app_ids, merchant_nos, clock
        self.writer = InboxWriter(engine, clock, BatchWaker(enqueuer))

    async def ingest(self, kind: Kind, body: bytes, sign: str | None) -> Verdict:
        if not sign:
            return self._refuse(kind, 401, "unsigned")
        if not self.verifier.verify(body, sign):
            return self._refuse(kind, 401, "bad_signature")
        try:
            parsed = loads_object(body)
            ref, problem = self._check(kind, parsed)
        except (WireFormatError, ReplyInvalid):
            return self._refuse(kind, 400, "malformed")
        if problem:
            if problem == "stale":
                await run_in_threadpool(self._hint_poll, kind, ref)
            return self._refuse(kind, 400, problem)
        return await self._keep(kind, ref, inbox.dedupe_key(kind, ref, parsed), body, sign)

    def _check(self, kind: Kind, parsed: dict[str, object]) -> tuple[str, str | None]:
        """(reference, problem): the order/refund number, or why the notification is refused."""
        if kind == "payment":
            payment = PaymentNotification.read(parsed)
            header, ref = payment.header, payment.order.out_trade_no
        else:
            refund = RefundNotification.read(parsed)
            header, ref = refund.header, refund.refund.out_refund_no
        if header.app_id is not None and header.app_id not in self.app_ids:
            return ref, "not_ours"
        if header.merchant_no is not None and header.merchant_no not in self.merchant_nos:
            return ref, "not_ours"
        now = self.clock()
        if header.notify_time is not None and not (now - FRESHNESS <= header.notify_time <= now + FUTURE_SKEW):
            return ref, "stale"
        return ref, None

    async def _keep(self, kind: Kind, ref: str, key: str, body: bytes, sign: str) -> Verdict:
        try:
            kept = await self._committed(self.writer.submit(kind=kind, ref=ref, key=key, body=body, sign=sign))
        except (SQLAlchemyError, TimeoutError, WriterDied) as exc:
            log.error("notification.persist_failed", kind=kind, ref=ref, error=type(exc).__name__)
            NOTIFICATIONS_REJECTED.labels(kind, "store_unavailable").inc()
            return Verdict(503, "store_unavailable")
        entry_id, processed = kept.entry_id, kept.already_processed
        if kept.seen:
            return self._ack(kind, ref, "duplicate", None)
        if kept.unqueued is not None:
            log.error("notification.enqueue_failed", kind=kind, ref=ref, inbox_id=entry_id,
                      error=type(kept.unqueued).__name__)
            NOTIFICATIONS_REJECTED.labels(kind, "queue_unavailable").inc()
            return Verdict(503, "queue_unavailable", entry_id)
        crash_point("before_ack")
        return self._ack(kind, ref, "duplicate" if processed else "accepted", entry_id)

    @staticmethod
    async def _committed(future: Future[Kept]) -> Kept:
        """Await the writer's commit, at most ``WAIT_SECONDS``; the commit itself is never cancelled."""
        waiter = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), WAIT_SECONDS)
        except TimeoutError:
            waiter.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning later
            raise

    def _ack(self, kind: Kind, ref: str, reason: str, entry_id: int | None) -> Verdict:
        NOTIFICATIONS_RECEIVED.labels(kind, reason).inc()
        log.info("notification.acked", kind=kind, ref=ref, outcome=reason, inbox_id=entry_id)
        return Verdict(200, reason, entry_id)

    def _hint_poll(self, kind: Kind, ref: str) -> None:
        """A signed but stale notification is not applied, but it hints the record may have moved:
        poll it (one poll job per record at most, so a replay storm cannot multiply gateway calls)."""
        try:
            with read(self.engine) as conn:
                record = repo.find_order(conn, ref) if kind == "payment" else repo.find_refund(conn, ref)
            if record is None or record.state in (ORDER_TERMINAL | REFUND_TERMINAL):
                return
            if kind == "payment":
                self.enqueuer.poll_order(record.id)
            else:
                self.enqueuer.poll_refund(record.id)
        except (SQLAlchemyError, RedisError) as exc:
            log.warning("notification.hint_poll_failed", kind=kind, ref=ref, error=type(exc).__name__)

    def _refuse(self, kind: Kind, status: int, reason: str) -> Verdict:
        NOTIFICATIONS_REJECTED.labels(kind, reason).inc()
        log.warning("notification.rejected", kind=kind, status=status, reason=reason)
        return Verdict(status, reason)
