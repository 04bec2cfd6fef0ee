"""An embedded stack on loopback: simulator, receiver, store, Redis, and the product's runtime.

The demo and the end-to-end tests use it. Keys are generated in memory; the simulator is the
gateway; the receiver runs on a thread and gets the simulator's notifications over real HTTP;
jobs run either in this process (``drain``/``settle``, deterministic, for tests) or in real
worker and scheduler processes (``spawn_workers``, for the demo).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from worker.bootstrap import install_runtime
from worker.config import Settings
from worker.devtools.serving import ServedApp, serve_in_thread
from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair
from worker.receiver.web import receiver_app
from worker.runtime import Runtime, Timers
from worker.runtime.queueing import make_queue
from worker.scheduler import Scheduler
from worker.service import PaymentService
from worker.store.db import create_engine
from worker.store.migrate import upgrade

APP_ID = "EMBEDDED_APP"
MERCHANT_NO = "EMBEDDED_MERCHANT"


@dataclass(kw_only=True)
class EmbeddedStack:
    redis_url: str
    database_url: str
    time_scale: float = 0.01
    sim_options: dict[str, Any] = field(default_factory=dict)
    event_sinks: tuple[Callable[[dict[str, object]], None], ...] = ()
    merchant: PortalKeyPair = field(default_factory=generate_portal_key_pair)
    platform: PortalKeyPair = field(default_factory=generate_portal_key_pair)

    def start(self) -> EmbeddedStack:
        from worker.devtools.simulator.config import SimulatorConfig
        from worker.devtools.simulator.server import start_background

        self.sim = start_background(SimulatorConfig(
            app_id=APP_ID, merchant_no=MERCHANT_NO, merchant_public_keys=(self.merchant.public_key,),
            platform_private_key=self.platform.private_key, time_scale=self.time_scale, **self.sim_options))
        self.settings = Settings.from_env(self.environment(notify_base_url=None))
        engine = create_engine(self.database_url)
        upgrade(engine)
        self.rt = Runtime(settings=self.settings, engine=engine, redis=Redis.from_url(self.redis_url),
                          timers=Timers().scaled(self.time_scale), event_sinks=self.event_sinks)
        self.receiver: ServedApp = serve_in_thread(receiver_app(self.rt), name="receiver")
        self.settings = self.settings.with_overrides(notify_base_url=self.receiver.base_url)
        self.rt.settings = self.settings
        install_runtime(self.rt)
        self.service = PaymentService(self.rt)
        self.scheduler = Scheduler(self.rt, sweep_every=0)
        self.processes: list[subprocess.Popen[bytes]] = []
        return self

    def environment(self, *, notify_base_url: str | None) -> dict[str, str]:
        """The settings of this stack as environment variables (for worker processes)."""
        env = {
            "CHECUS_GATEWAY_URL": self.sim.base_url, "CHECUS_APP_ID": APP_ID, "CHECUS_MERCHANT_NO": MERCHANT_NO,
            "CHECUS_MERCHANT_PRIVATE_KEY": self.merchant.private_key,
            "CHECUS_PLATFORM_PUBLIC_KEYS": self.platform.public_key, "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url, "CHECUS_TIME_SCALE": str(self.time_scale),
        }
        if notify_base_url:
            env["CHECUS_NOTIFY_BASE_URL"] = notify_base_url
        return env

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.receiver.stop()
        self.sim.stop()
        install_runtime(None)
        self.rt.engine.dispose()

    # -- running jobs in this process (tests) ----------------------------------------------

    def drain(self) -> int:
        """Run every job that is due now, including delayed retries that came due; returns how many ran."""
        queue = make_queue(self.rt.redis)
        ran = 0
        for _ in range(100):
            scheduler = RQScheduler([queue], connection=self.rt.redis, serializer=JSONSerializer,
                                    logging_level="WARNING")
            scheduler.acquire_locks()  # type: ignore[no-untyped-call]
            scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
            scheduler.release_locks()  # type: ignore[no-untyped-call]
            self.scheduler.tick()
            if queue.count == 0:
                break
            worker = SimpleWorker([queue], connection=self.rt.redis, serializer=JSONSerializer,
                                  log_job_description=False)
            before = worker.successful_job_count + worker.failed_job_count
            worker.work(burst=True, logging_level="WARNING")
            ran += worker.successful_job_count + worker.failed_job_count - before
        return ran

    def settle(self, done: Callable[[], bool], *, timeout: float = 15.0) -> bool:
        """Drain jobs until ``done()`` holds (notifications arrive asynchronously) or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            if done():
                return True
            time.sleep(0.02)
        return done()

    def idle(self) -> bool:
        queue = make_queue(self.rt.redis)
        return queue.count == 0 and StartedJobRegistry(queue=queue).count == 0 \
            and ScheduledJobRegistry(queue=queue).count == 0  # type: ignore[no-untyped-call]

    # -- running jobs in real processes (the demo) -------------------------------------------

    def spawn_workers(self, *, workers: int = 1, log_dir: Path | None = None) -> None:
        env = {**os.environ, **self.environment(notify_base_url=self.receiver.base_url)}
        commands = [["work"]] * workers + [["scheduler", "--interval", "0.2"]]
        for i, args in enumerate(commands):
            log = open(log_dir / f"{args[0]}-{i}.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
            self.processes.append(subprocess.Popen([sys.executable, "-m", "worker", *args], env=env,
                                                   stdout=log, stderr=log))
