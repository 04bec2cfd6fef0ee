"""The runtime: the dependencies every flow is handed, defined apart from the composition root.

``Runtime`` (``dependencies``) holds the settings, the engine, Redis, the clock, the ``Timers``
and, built on first use, the gateway client, the per-order ``locks`` and the rq ``queueing``;
``crashpoints`` names the places the reliability tests crash a process. ``worker.bootstrap``
builds a ``Runtime`` from settings, once per process; everything else receives it.
"""

from worker.runtime.dependencies import Runtime, freeze_startup_heap, utc_now
from worker.runtime.timers import Timers

__all__ = ["Runtime", "Timers", "freeze_startup_heap", "utc_now"]
