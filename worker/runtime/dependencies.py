"""``Runtime``: the real dependencies of one process, handed to every flow (``bootstrap`` builds it).

Each process role builds only what it uses: the receiver needs the platform keys but never the
merchant private key; the gateway client (and so the private key) is built on first use by workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from redis import Redis
from sqlalchemy.engine import Engine

from worker.config import Settings
from worker.gateway import ChecusClient, Verifier, build_http_client
from worker.metrics import GATEWAY_CALLS, GATEWAY_LATENCY
from worker.runtime.locks import OrderLocks
from worker.runtime.queueing import Enqueuer, make_queue
from worker.runtime.timers import Timers


def observe_gateway_call(endpoint: str, code: str, seconds: float) -> None:
    GATEWAY_CALLS.labels(endpoint, code).inc()
    GATEWAY_LATENCY.labels(endpoint).observe(seconds)


def utc_now() -> datetime:
    return datetime.now(UTC)


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
