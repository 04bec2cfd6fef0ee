"""Serving the receiver: in this process, or as several on one port (``CHECUS_RECEIVER_PROCESSES`` > 1).

``serve_receiver`` is what ``checus-worker web`` runs. With several processes, uvicorn's
supervisor (the one ``uvicorn --workers`` uses) binds the port, starts each process from an
import path (``process_app``, with ``ReceiverHttpProtocol``), restarts one that dies and stops
them all on SIGTERM. What it does not do, each process does for itself here: the
set-up ``checus-worker web`` does for a single process (logs, limits, metrics), and stopping
when the supervisor is killed.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys

import uvicorn
from starlette.types import ASGIApp

from worker.bootstrap import process_runtime
from worker.logs import configure_logging
from worker.receiver.slow_clients import GuardedHttpToolsProtocol
from worker.receiver.web import client_limits, receiver_app, server_options, serving_app
from worker.runtime import Runtime

RECEIVER_APP = "worker.receiver.processes:process_app"
RECEIVER_PROTOCOL = "worker.receiver.processes:ReceiverHttpProtocol"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ReceiverHttpProtocol(GuardedHttpToolsProtocol):
    """The guarded protocol in a process of a multi-process receiver. uvicorn's supervisor starts
    each process from an import path, so the class must have one; ``process_app`` gives it the
    configured limits before the first connection."""


def app_factory() -> ASGIApp:
    """For ``uvicorn --factory worker.receiver.processes:app_factory
    --http worker.receiver.slow_clients:GuardedHttpToolsProtocol`` (default limits);
    ``checus-worker web`` applies the configured ones."""
    return receiver_app(process_runtime())


def process_app() -> ASGIApp:
    """One process of ``checus-worker web`` with ``CHECUS_RECEIVER_PROCESSES`` > 1, as uvicorn's
    supervisor starts it: the same set-up as a single-process receiver, in this process."""
    _die_with_supervisor()
    rt = process_runtime()
    configure_logging(level=rt.settings.log_level)
    _no_access_log()
    ReceiverHttpProtocol.limits = client_limits(rt.settings)
    return serving_app(rt, metrics_span=rt.settings.receiver_processes)


def serve_receiver(rt: Runtime, *, host: str, port: int, processes: int) -> None:
    """Serve the receiver until stopped: in this process, or in ``processes`` processes sharing the port.

    Why several: one process runs its requests on one event loop, so it uses at most one core
    (measured on 2 cores: about 0.8 of a core at 1,000 notifications/s, the rest of the machine
    idle at times while requests waited for it). uvicorn's supervisor (the one ``uvicorn
    --workers`` uses) binds the port once, starts the processes, restarts one that dies and
    stops them all on SIGTERM. Each keeps its own group-committing inbox writer; SQLite
    serializes their commits, PostgreSQL runs them side by side.
    """
    rt.verifier  # noqa: B018 - a bad platform key fails here, once, not in a loop of restarted processes
    if processes <= 1:
        uvicorn.run(serving_app(rt), host=host, port=port, **server_options(rt.settings))
        return
    options = {**server_options(rt.settings), "http": RECEIVER_PROTOCOL}
    uvicorn.run(RECEIVER_APP, factory=True, workers=processes, host=host, port=port, **options)


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
