"""The receiver's ASGI application and its server options, built from a runtime (``checus-worker web`` serves it)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis as AsyncRedis
from starlette.types import ASGIApp

from .bootstrap import Runtime, freeze_startup_heap, process_runtime
from .config import Settings
from .ingest import Ingestor
from .metrics import start_metrics
from .receiver import create_receiver
from .slow_clients import BodyDeadline, ClientLimits, guarded_protocol


def receiver_app(rt: Runtime) -> ASGIApp:
    ingestor = Ingestor(
        verifier=rt.verifier, engine=rt.engine, aredis=AsyncRedis.from_url(rt.settings.redis_url), enqueuer=rt.enqueuer,
        app_ids=frozenset({rt.settings.app_id}), merchant_nos=frozenset({rt.settings.merchant_no}), clock=rt.clock,
    )
    routes = []
    if rt.settings.ops_token:
        from .ops.page import ops_routes

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


def app_factory() -> ASGIApp:
    """For ``uvicorn --factory worker.web:app_factory --http worker.slow_clients:GuardedHttpToolsProtocol``
    (default limits); ``checus-worker web`` applies the configured ones."""
    return receiver_app(process_runtime())


def serving_app(rt: Runtime, *, metrics_span: int = 1) -> ASGIApp:
    """The app of a process about to serve, after that process's set-up: its metrics (with the
    business gauges), the platform keys loaded (a bad key fails at start, not on the first
    request) and the start-up heap frozen. The one sequence for a single-process receiver and for
    each process of several (``receiver_processes.process_app``); logging is configured before."""
    start_metrics(rt, store=True, span=metrics_span)
    rt.verifier  # noqa: B018 - loaded now, see above
    app = receiver_app(rt)
    freeze_startup_heap()
    return app


def serve_receiver(rt: Runtime, *, host: str, port: int, processes: int) -> None:
    """Serve the receiver until stopped: in this process, or in ``processes`` processes sharing the port.

    Why several: one process runs its requests on one event loop, so it uses at most one core
    (measured on 2 cores: about 0.8 of a core at 1,000 notifications/s, the rest of the machine
    idle at times while requests waited for it). uvicorn's supervisor (the one ``uvicorn
    --workers`` uses) binds the port once, starts the processes, restarts one that dies and
    stops them all on SIGTERM. Each keeps its own group-committing inbox writer; SQLite
    serializes their commits, PostgreSQL runs them side by side.
    """
    import uvicorn

    rt.verifier  # noqa: B018 - a bad platform key fails here, once, not in a loop of restarted processes
    if processes <= 1:
        uvicorn.run(serving_app(rt), host=host, port=port, **server_options(rt.settings))
        return
    from .receiver_processes import RECEIVER_APP, RECEIVER_PROTOCOL

    options = {**server_options(rt.settings), "http": RECEIVER_PROTOCOL}
    uvicorn.run(RECEIVER_APP, factory=True, workers=processes, host=host, port=port, **options)
