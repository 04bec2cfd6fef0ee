"""The receiver as several processes on one port (``CHECUS_RECEIVER_PROCESSES`` > 1).

uvicorn's supervisor (the one ``uvicorn --workers`` uses) binds the port, starts each process
from an import path (``process_app``, with ``ReceiverHttpProtocol``), restarts one that dies
and stops them all on SIGTERM. What it does not do, each process does for itself here: the
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

from starlette.types import ASGIApp

from .bootstrap import process_runtime
from .logs import configure_logging
from .slow_clients import GuardedHttpToolsProtocol
from .web import client_limits, serving_app

RECEIVER_APP = "worker.receiver_processes:process_app"
RECEIVER_PROTOCOL = "worker.receiver_processes:ReceiverHttpProtocol"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
    return serving_app(rt, metrics_span=rt.settings.receiver_processes)


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
