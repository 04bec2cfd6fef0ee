"""The webhook receiver (``checus-worker web``): HTTP edge only, the logic lives in ``ingest``.

It bounds what it reads (413 past ``MAX_BODY`` without reading further), refuses what is not
JSON (415), hands the raw bytes and the ``sign`` header to the ``Ingestor`` (on the event
loop: its I/O is awaited) and answers with its verdict. ``/healthz`` reports whether the store
and Redis answer and whether this process's inbox writer thread runs (and how often it was
restarted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from worker.receiver.inbox_writer import InboxWriter
from worker.receiver.ingest import Ingestor, Kind, sign_value
from worker.store.db import read

MAX_BODY = 64 * 1024
PAYMENT_PATH = "/checus/notify/payment"
REFUND_PATH = "/checus/notify/refund"


class BodyTooLarge(Exception):
    pass


async def read_bounded(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, or ``BodyTooLarge`` after reading at most ``limit + 1`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _refuse_unread(status: int, body: bytes) -> Response:
    """A refusal sent before the body was read: close the connection, or the server would go on
    reading (and discarding) whatever the client still sends to keep the connection alive."""
    return Response(body, status_code=status, media_type="application/json", headers={"connection": "close"})


def notification_endpoint(ingestor: Ingestor, kind: Kind) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _refuse_unread(415, b'{"code":"FAIL","msg":"unsupported_media_type"}')
        try:
            body = await read_bounded(request)
        except BodyTooLarge:
            return _refuse_unread(413, b'{"code":"FAIL","msg":"too_large"}')
        verdict = await ingestor.ingest(kind, body, sign_value(request.headers.getlist("sign")))
        return _json(verdict.status, verdict.body)

    return endpoint


def health_endpoint(engine: Engine, redis: Redis, writer: InboxWriter) -> Callable[[Request], object]:
    def check() -> dict[str, str]:
        status = {"store": "ok", "redis": "ok", "inbox_writer": "ok" if writer.alive else "down"}
        try:  # a read transaction: on SQLite a plain connect would BEGIN IMMEDIATE and queue for the write lock
            with read(engine) as conn:
                conn.execute(sa.text("SELECT 1"))
        except SQLAlchemyError:
            status["store"] = "down"
        try:
            redis.ping()
        except RedisError:
            status["redis"] = "down"
        return status

    async def endpoint(_request: Request) -> Response:
        status = await run_in_threadpool(check)
        healthy = all(v == "ok" for v in status.values())
        return JSONResponse({**status, "inbox_writer_restarts": writer.restarts}, status_code=200 if healthy else 503)

    return endpoint


def create_receiver(ingestor: Ingestor, *, engine: Engine, redis: Redis,
                    extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    return Starlette(routes=[
        Route(PAYMENT_PATH, notification_endpoint(ingestor, "payment"), methods=["POST"]),
        Route(REFUND_PATH, notification_endpoint(ingestor, "refund"), methods=["POST"]),
        Route("/healthz", health_endpoint(engine, redis, ingestor.writer), methods=["GET"]),
        *extra_routes,
    ])
