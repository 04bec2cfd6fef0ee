"""The composition root: builds every real dependency from ``Settings``, once per process.

Everything else receives a ``Runtime`` (``worker.runtime``) or the parts it needs; only the entry
points import this module (the CLI commands, ``jobs``, ``rqworker``, the receiver's process
factories, the demo stack).
"""

from __future__ import annotations

from worker.config import Settings
from worker.runtime import Runtime, Timers
from worker.runtime.redis_clients import sync_redis
from worker.store.db import create_engine


def build_runtime(settings: Settings, *, timers: Timers | None = None) -> Runtime:
    return Runtime(
        settings=settings,
        engine=create_engine(settings.database_url, prepared_statements=settings.database_prepared_statements),
        redis=sync_redis(settings),
        timers=timers or Timers(),
    )


_process_runtime: Runtime | None = None


def install_runtime(rt: Runtime | None) -> None:
    """Make ``rt`` the runtime of this process (workers, tests and the demo call this)."""
    global _process_runtime  # noqa: PLW0603 - one composition root per process, by design
    _process_runtime = rt


def process_runtime() -> Runtime:
    """The runtime of this process, built from the environment on first use."""
    global _process_runtime  # noqa: PLW0603
    if _process_runtime is None:
        import os

        from worker.flows.events import configured_sinks

        settings = Settings.from_env(os.environ)
        base = Timers(poll_ladder=settings.poll_ladder) if settings.poll_ladder else Timers()
        rt = build_runtime(settings, timers=base.scaled(settings.time_scale))
        rt.event_sinks = configured_sinks(settings)
        _process_runtime = rt
    return _process_runtime
