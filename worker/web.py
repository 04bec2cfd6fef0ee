"""The receiver's ASGI application and its server options, built from a runtime (``checus-worker web`` serves it)."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from starlette.types import ASGIApp

from .bootstrap import Runtime, freeze_startup_heap, process_runtime
from .config import Settings
from .ingest import Ingestor
from .logs import configure_logging
from .metrics import start_metrics
from .receiver import create_receiver
from .slow_clients import BodyDeadline, ClientLimits, GuardedHttpToolsProtocol, guarded_protocol

RECEIVER_APP = "worker.web:process_app"
RECEIVER_PROTOCOL = "worker.web:ReceiverHttpProtocol"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


class ReceiverHttpProtocol(GuardedHttpToolsProtocol):
    """The guarded protocol in a process of a multi-process receiver. uvicorn's supervisor starts
    each process from an import path, so the class must have one; ``process_app`` gives it the
    configured limits before the first connection."""


def process_app() -> ASGIApp:
    """One process of ``checus-worker web`` with ``CHECUS_RECEIVER_PROCESSES`` > 1, as uvicorn's
    supervisor starts it: the same set-up as a single-process receiver, in this process."""
    _die_with_supervisor()
    rt = process_runtime()
    configure_logging(level=rt.settings.log_level)
    _no_access_log()
    ReceiverHttpProtocol.limits = client_limits(rt.settings)
    start_metrics(rt, store=True, span=rt.settings.receiver_processes)
    rt.verifier  # noqa: B018 - a bad platform key fails at start, not on the first request
    app = receiver_app(rt)
    freeze_startup_heap()
    return app


def _die_with_supervisor() -> None:
    """Ask the kernel for SIGTERM (a graceful stop) when the supervisor dies, even of kill -9.

    Why: uvicorn's supervisor stops its processes when it is stopped, but nothing stops them when
    it is killed. They would go on serving the port unmanaged, running the old code after a
    deploy and keeping a restarted receiver from binding. Linux only (``prctl``); elsewhere run
    the receiver under a manager that stops the whole process group (systemd, Kubernetes).
    """
    if not sys.platform.startswith("linux"):
        return
    supervisor = multiprocessing.parent_process()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if supervisor is not None and os.getppid() != supervisor.pid:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def _no_access_log() -> None:
    """``access_log=False`` as uvicorn applies it when it builds its config, which a process its
    supervisor starts does not do again: without this, every request would also be logged there
    (each notification already has its own line, ``notification.acked`` or ``.rejected``)."""
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False


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
        app = receiver_app(rt)
        freeze_startup_heap()
        uvicorn.run(app, host=host, port=port, **server_options(rt.settings))
        return
    options = {**server_options(rt.settings), "http": RECEIVER_PROTOCOL}
    uvicorn.run(RECEIVER_APP, factory=True, workers=processes, host=host, port=port, **options)
