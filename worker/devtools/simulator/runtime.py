"""The simulator's composition root: one object holding config, state, clock, keys and workers.

Handlers get a ``SimulatorRuntime`` and nothing else. Everything here that runs "later" lives on the
server's event loop (scheduler, notifier); everything a test may read from another thread
(``state``, ``clock``) is thread-safe on its own.

Two RNGs, both derived from ``config.seed``: one for endpoint faults and one for
notification faults and ids, so that the timing of background deliveries can never shift
which request draws a fault.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import lru_cache

from worker.devtools.simulator.clock import Scheduler, VirtualClock
from worker.devtools.simulator.config import SimulatorConfig
from worker.devtools.simulator.envelope import EnvelopeRules
from worker.devtools.simulator.faults import FaultPlan
from worker.devtools.simulator.ids import IdMinter
from worker.devtools.simulator.notifier import Notifier, NotifierSettings
from worker.devtools.simulator.records import Order
from worker.devtools.simulator.state import SimulatorState
from worker.gateway.signing import Signer, Verifier


@lru_cache(maxsize=8)
def _signer(private_key: str) -> Signer:
    """Loading an RSA private key validates it, which takes ~50 ms: tests start hundreds of simulators."""
    return Signer.from_value(private_key, setting="platform_private_key")


@lru_cache(maxsize=8)
def _verifier(public_keys: tuple[str, ...]) -> Verifier:
    return Verifier.from_values(public_keys, setting="merchant_public_keys")


def _rng(seed: int | None, stream: str) -> random.Random:
    if seed is None:
        return random.Random()  # noqa: S311 - fault draws for tests, not secrets
    return random.Random(f"{seed}:{stream}")  # noqa: S311 - repeatable fault draws, not secrets


class SimulatorRuntime:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.state = SimulatorState()
        self.clock = VirtualClock()
        self.scheduler = Scheduler(self.clock)
        self.ids = IdMinter(config.seed)
        self.signer = _signer(config.platform_private_key)
        self.verifier = _verifier(config.merchant_public_keys)
        self.rules = EnvelopeRules(
            app_id=config.app_id,
            merchant_no=config.merchant_no,
            tolerance_seconds=config.clock_tolerance_seconds,
            lenient_clock=config.lenient_clock,
            clock_error_code=config.clock_error_code,
        )
        self.faults = config.faults
        self.faults_set_at = self.clock.now()
        self.fault_rng = _rng(config.seed, "endpoints")
        self._notify_rng = _rng(config.seed, "notifications")
        self.notifier = Notifier(
            settings=NotifierSettings(
                app_id=config.app_id,
                merchant_no=config.merchant_no,
                time_scale=config.time_scale,
                timeout_seconds=config.notify_timeout_seconds,
                strict_ack=config.strict_ack,
            ),
            state=self.state,
            clock=self.clock,
            scheduler=self.scheduler,
            signer=self.signer,
            faults=lambda: self.faults.notifications,
            rng=self._notify_rng,
        )

    async def start(self) -> None:
        self.scheduler.start()
        await self.notifier.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.notifier.stop()

    async def reset(self) -> None:
        """Forget everything: records, timers, deliveries in flight, faults, clock offset."""
        self.scheduler.clear()
        await self.notifier.cancel_all()
        self.state.clear()
        self.clock.reset()
        self.ids.reseed(self.config.seed)
        self.set_faults(self.config.faults)

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan; reseeding makes the next draws repeat from run to run."""
        self.faults = plan
        self.faults_set_at = self.clock.now()
        self.fault_rng.seed(f"{self.config.seed}:endpoints" if self.config.seed is not None else None)
        self._notify_rng.seed(f"{self.config.seed}:notifications" if self.config.seed is not None else None)

    def advance(self, seconds: float) -> datetime:
        """Move virtual time forward and run every job that fell due, before answering."""
        now = self.clock.advance(seconds)
        self.scheduler.run_due()
        self.scheduler.wake()
        return now

    def hidden_from_query(self, order: Order) -> bool:
        seconds = self.faults.hidden_seconds(order.out_trade_no)
        if seconds <= 0:
            return False
        start = max(order.created_at, self.faults_set_at)
        return self.clock.now() < start + timedelta(seconds=seconds)

    def scaled(self, seconds: float) -> float:
        """A protocol delay in simulator seconds (the ladder, refund auto-completion)."""
        return seconds * self.config.time_scale
