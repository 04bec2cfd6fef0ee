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


def role_runtime(role: str) -> Runtime:
    """The runtime of a process role, once its settings are checked: every setting the role lacks or
    cannot read is reported at once (``SettingsErrors``), before the role waits for anything."""
    import os

    from worker.role_settings import role_settings

    return process_runtime(role_settings(os.environ, role))


def process_runtime(settings: Settings | None = None) -> Runtime:
    """The runtime of this process, built on first use from ``settings`` or the environment."""
    global _process_runtime  # noqa: PLW0603
    if _process_runtime is None:
        import os

        from worker.flows.events import configured_sinks

        settings = settings or Settings.from_env(os.environ)
        base = Timers(poll_ladder=settings.poll_ladder) if settings.poll_ladder else Timers()
        rt = build_runtime(settings, timers=base.scaled(settings.time_scale))
        rt.event_sinks = configured_sinks(settings)
        _process_runtime = rt
    return _process_runtime
