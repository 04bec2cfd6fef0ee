"""The composition root: builds every real dependency from ``Settings``, once per process.

Everything else receives a ``Runtime`` (or the parts it needs). Each process role builds
only what it uses: the receiver needs the platform keys but never the merchant private
key; the gateway client (and so the private key) is built on first use by workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

from redis import Redis
from sqlalchemy.engine import Engine

from .config import Settings
from .gateway import ChecusClient, Verifier, build_http_client
from .locks import OrderLocks
from .queueing import Enqueuer, make_queue
from .store.db import create_engine


def observe_gateway_call(endpoint: str, code: str, seconds: float) -> None:
    from .metrics import GATEWAY_CALLS, GATEWAY_LATENCY

    GATEWAY_CALLS.labels(endpoint, code).inc()
    GATEWAY_LATENCY.labels(endpoint).observe(seconds)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """Every timer the jobs and the scheduler use (seconds), scaled together for tests and demos."""

    poll_ladder: tuple[float, ...] = (60, 300, 900, 3600, 7200)
    poll_claim: float = 120  # a due poll is not enqueued again for this long
    first_poll: float = 30  # a new PENDING order is first polled after this
    confirm_delay: float = 1  # a contradiction is confirmed by query this soon
    refund_retry: float = 60  # "try later" answers to /refund are retried after this
    inbox_sweep_after: float = 60  # an inbox row unprocessed this long is enqueued again
    orphan_retries: tuple[float, ...] = (30, 300, 3600, 6 * 3600, 24 * 3600)
    stale_created_after: float = 120  # a CREATED order this old lost its API call: resolve by query
    lock_ttl: float = 10
    not_found_grace: float = 60  # an UNKNOWN create/refund the gateway has not heard of is resent after this
    not_found_alarm: float = 3600  # a PENDING order the gateway keeps not finding becomes an anomaly after this
    event_retry: tuple[float, ...] = (5, 30, 300, 1800, 3600)

    def scaled(self, factor: float) -> Timers:
        def s(v: float) -> float:
            return v * factor

        return Timers(
            poll_ladder=tuple(map(s, self.poll_ladder)), poll_claim=s(self.poll_claim),
            first_poll=s(self.first_poll), confirm_delay=s(self.confirm_delay), refund_retry=s(self.refund_retry),
            inbox_sweep_after=s(self.inbox_sweep_after), orphan_retries=tuple(map(s, self.orphan_retries)),
            stale_created_after=s(self.stale_created_after), lock_ttl=self.lock_ttl,
            not_found_grace=s(self.not_found_grace), not_found_alarm=s(self.not_found_alarm),
            event_retry=tuple(map(s, self.event_retry)),
        )

    @property
    def not_found(self) -> dict[str, timedelta]:
        """The keyword arguments the decide functions take for ORDER_NOT_EXIST answers."""
        return {"grace": timedelta(seconds=self.not_found_grace), "alarm": timedelta(seconds=self.not_found_alarm)}

    def ladder(self, step: int) -> timedelta:
        return timedelta(seconds=self.poll_ladder[min(step, len(self.poll_ladder) - 1)])


@dataclass(kw_only=True)
class Runtime:
    """The real dependencies of one process."""

    settings: Settings
    engine: Engine
    redis: Redis
    timers: Timers = field(default_factory=Timers)
    clock: Callable[[], datetime] = utc_now
    event_sinks: tuple[Callable[[dict[str, object]], None], ...] = ()
    client_factory: Callable[[], ChecusClient] | None = None

    @cached_property
    def enqueuer(self) -> Enqueuer:
        return Enqueuer(make_queue(self.redis))

    @cached_property
    def locks(self) -> OrderLocks:
        return OrderLocks(self.redis, ttl=self.timers.lock_ttl)

    @cached_property
    def verifier(self) -> Verifier:
        return self.settings.verifier()

    @cached_property
    def client(self) -> ChecusClient:
        if self.client_factory is not None:
            return self.client_factory()
        s = self.settings
        s.require("app_id", "merchant_no")
        return ChecusClient(
            http=build_http_client(connect_timeout=s.http_connect_timeout, read_timeout=s.http_read_timeout),
            base_url=s.gateway_url, app_id=s.app_id, merchant_no=s.merchant_no, signer=s.signer(),
            verifier=self.verifier, observe=observe_gateway_call,
        )

    def notify_url(self, kind: str) -> str | None:
        base = self.settings.notify_base_url
        return f"{base}/checus/notify/{kind}" if base else None


def build_runtime(settings: Settings, *, timers: Timers | None = None) -> Runtime:
    return Runtime(
        settings=settings,
        engine=create_engine(settings.database_url),
        redis=Redis.from_url(settings.redis_url),
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

        from .events import configured_sinks

        settings = Settings.from_env(os.environ)
        base = Timers(poll_ladder=settings.poll_ladder) if settings.poll_ladder else Timers()
        rt = build_runtime(settings, timers=base.scaled(settings.time_scale))
        rt.event_sinks = configured_sinks(settings)
        _process_runtime = rt
    return _process_runtime


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (imported modules, the runtime) out of the cyclic GC's sight.

    Why: a long-running role allocates a few hundred small objects per notification, so the
    collector runs often, and each older-generation pass walks every object made at import time
    (SQLAlchemy, Starlette, rq ...) although none of it ever becomes garbage. ``gc.freeze()`` is
    the standard library's answer; objects made later are collected as usual.
    """
    import gc

    gc.collect()
    gc.freeze()
