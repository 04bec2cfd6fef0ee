"""The receiver's ASGI application and its server options, built from a runtime (``checus-worker web`` serves it)."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp

from worker.config import Settings
from worker.ops.gauges import start_metrics
from worker.receiver.app import create_receiver
from worker.receiver.ingest import Ingestor
from worker.receiver.slow_clients import BodyDeadline, ClientLimits, guarded_protocol
from worker.runtime import Runtime, freeze_startup_heap


def receiver_app(rt: Runtime) -> ASGIApp:
    ingestor = Ingestor(
        verifier=rt.verifier, engine=rt.engine, enqueuer=rt.enqueuer,
        app_ids=frozenset({rt.settings.app_id}), merchant_nos=frozenset({rt.settings.merchant_no}), clock=rt.clock,
    )
    routes = []
    if rt.settings.ops_token:
        from worker.ops.page import ops_routes

        routes = ops_routes(rt, rt.settings.ops_token)
    app = create_receiver(ingestor, engine=rt.engine, redis=rt.redis, extra_routes=routes)
    return BodyDeadline(app, seconds=rt.settings.receiver_body_timeout)


def client_limits(settings: Settings) -> ClientLimits:
    return ClientLimits(header_timeout=settings.receiver_header_timeout,
                        max_header_bytes=settings.receiver_max_header_bytes)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the receiver (besides host and port): httptools guarded against slow and
    large clients (``slow_clients``), 5 s keep-alive, at most 1,000 connections (503 past them)."""
    return {"http": guarded_protocol(client_limits(settings)), "timeout_keep_alive": 5, "limit_concurrency": 1000,
            "log_config": None, "access_log": False}


def serving_app(rt: Runtime, *, metrics_span: int = 1) -> ASGIApp:
    """The app of a process about to serve, after that process's set-up: its metrics (with the
    business gauges), the platform keys loaded (a bad key fails at start, not on the first
    request) and the start-up heap frozen. The one sequence for a single-process receiver and for
    each process of several (``processes.process_app``); logging is configured before."""
    start_metrics(rt, role="web", store=True, span=metrics_span)
    rt.verifier  # noqa: B018 - loaded now, see above
    app = receiver_app(rt)
    freeze_startup_heap()
    return app
