"""A whole deployment on loopback, in real processes: simulator, receiver, workers, scheduler.

``Cluster`` starts the Checus simulator (``checus-worker sim``), the receiver (``web``), forking
and simple rq workers (``work --fork`` / ``work``) and the scheduler under one ``Supervisor``,
against a ``RedisServer`` the test can kill and restart and a SQL store (PostgreSQL in the
multi-process tests). Merchant events go to a ``WebhookSink`` served by the test process. The
test process holds its own ``Runtime`` built from the same settings, for the merchant's calls
(``PaymentService``) and for reading the store. Each role gets only the settings it needs: the
receiver never sees the merchant private key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.registry import StartedJobRegistry

from worker.bootstrap import build_runtime
from worker.config import Settings
from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.gateway.signing import PortalKeyPair, Signer, generate_portal_key_pair
from worker.gateway.wire import dumps, format_time
from worker.runtime import Runtime, Timers
from worker.runtime.queueing import make_queue
from worker.runtime.redis_clients import sync_redis
from worker.service import PaymentService
from worker.store.db import create_engine, read
from worker.store.migrate import upgrade
from worker.store.schema import inbox, orders, outbox, refunds

from .checker import Snapshot, load_snapshot
from .procs import Pid, Supervisor
from .simctl import SimControl
from .sinks import WebhookSink

APP_ID = "RELIABILITY_APP"
MERCHANT_NO = "RELIABILITY_MERCHANT"
REPO = Path(__file__).resolve().parents[2]
PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
PYTHON = [sys.executable, "-m", "worker"]


@dataclass(kw_only=True)
class ClusterSpec:
    time_scale: float = 0.01
    fork_workers: int = 2
    simple_workers: int = 2
    schedulers: int = 1
    sim_seed: int = 0
    sim_faults: dict[str, Any] = field(default_factory=dict)
    refund_auto_complete_seconds: float | None = 100.0  # gateway seconds, scaled by time_scale
    http_read_timeout: float = 2.0
    notify_timeout_seconds: float = 5.0
    sink_failure_rate: float = 0.0
    log_level: str = "INFO"
    receiver_processes: int = 1
    redis_env: dict[str, str] = field(default_factory=dict)  # e.g. REDIS_SENTINELS for every role
    extra_env: dict[str, str] = field(default_factory=dict)  # any other setting for every role
    service_host: str = "127.0.0.1"  # where the simulator and the event sink listen (a bridge for namespaces)


@dataclass(frozen=True, slots=True)
class Quiet:
    reached: bool
    seconds: float
    status: dict[str, int]


class Cluster:
    def __init__(self, *, root: Path, redis: RedisServer, database_url: str, spec: ClusterSpec) -> None:
        self.root = root
        self.redis_server = redis
        self.database_url = database_url
        self.spec = spec
        self.sup = Supervisor(root / "logs", cwd=REPO)
        self.merchant: PortalKeyPair = generate_portal_key_pair()
        self.platform: PortalKeyPair = generate_portal_key_pair()
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.sink = WebhookSink(self.webhook_secret, failure_rate=spec.sink_failure_rate, seed=spec.sim_seed,
                                host=spec.service_host)
        self.sim_port, self.web_port = free_port(), free_port()
        self.sim = SimControl(f"http://{spec.service_host}:{self.sim_port}")
        self.receiver_url = f"http://127.0.0.1:{self.web_port}"
        self.redis = (sync_redis(Settings.from_env({"REDIS_URL": redis.url, **spec.redis_env}))
                      if spec.redis_env else Redis.from_url(redis.url, socket_timeout=2, socket_connect_timeout=1))
        self.workers: list[str] = []

    # -- settings for each role --------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
        env.update({"PYTHONUNBUFFERED": "1", "LOG_LEVEL": self.spec.log_level})
        return env

    def sim_env(self) -> dict[str, str]:
        env = self._base_env()
        env.update({
            "CHECUS_SIM_APP_ID": APP_ID, "CHECUS_SIM_MERCHANT_NO": MERCHANT_NO,
            "CHECUS_SIM_MERCHANT_PUBLIC_KEYS": self.merchant.public_key,
            "CHECUS_SIM_PLATFORM_PRIVATE_KEY": self.platform.private_key,
            "CHECUS_SIM_SEED": str(self.spec.sim_seed),
            "CHECUS_SIM_NOTIFY_TIMEOUT_SECONDS": str(self.spec.notify_timeout_seconds),
            "CHECUS_SIM_FAULTS": json.dumps(self.spec.sim_faults),
        })
        if self.spec.refund_auto_complete_seconds is not None:
            env["CHECUS_SIM_REFUND_AUTO_COMPLETE_SECONDS"] = str(self.spec.refund_auto_complete_seconds)
        return env

    def receiver_env(self) -> dict[str, str]:
        """The receiver: platform public keys, store and Redis; no merchant private key."""
        env = self._base_env()
        env.update({
            "CHECUS_GATEWAY_URL": self.sim.base_url, "CHECUS_APP_ID": APP_ID, "CHECUS_MERCHANT_NO": MERCHANT_NO,
            "CHECUS_PLATFORM_PUBLIC_KEYS": self.platform.public_key, "REDIS_URL": self.redis_server.url,
            "DATABASE_URL": self.database_url, "CHECUS_TIME_SCALE": str(self.spec.time_scale),
            "CHECUS_RECEIVER_PROCESSES": str(self.spec.receiver_processes), **self.spec.redis_env,
            **self.spec.extra_env,
        })
        return env

    def worker_env(self) -> dict[str, str]:
        env = self.receiver_env()
        env.update({
            "CHECUS_MERCHANT_PRIVATE_KEY": self.merchant.private_key,
            "CHECUS_NOTIFY_BASE_URL": self.receiver_url,
            "CHECUS_HTTP_CONNECT_TIMEOUT": "1", "CHECUS_HTTP_READ_TIMEOUT": str(self.spec.http_read_timeout),
            "CHECUS_EVENT_WEBHOOK_URL": self.sink.url, "CHECUS_EVENT_WEBHOOK_SECRET": self.webhook_secret,
        })
        return env

    def secrets(self) -> list[str]:
        """Material that must never appear in any log: the private keys and the webhook secret."""
        return [self.merchant.private_key, self.platform.private_key, self.webhook_secret]

    def leaked_secrets(self) -> list[str]:
        """Log files holding any 32-character window of a secret (sampled along each secret)."""
        windows = []
        for secret in self.secrets():
            flat = "".join(secret.split())
            windows += [flat[i:i + 32] for i in range(8, max(len(flat) - 40, 9), max(len(flat) // 6, 1))]
        leaks = []
        for path in sorted(self.sup.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            leaks += [f"{path.name}: window {w[:6]}..." for w in windows if w in text]
        return leaks

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Cluster:
        self.start_shared_services()
        self.start_host_roles()
        self.start_test_client()
        return self

    def start_shared_services(self) -> None:
        """What every host shares: the event sink, the schema, the simulator."""
        self.sink.start()
        engine = create_engine(self.database_url)
        upgrade(engine)
        engine.dispose()
        self.sup.start("sim", [*PYTHON, "sim", "--host", self.spec.service_host, "--port", str(self.sim_port),
                               "--time-scale", str(self.spec.time_scale)], self.sim_env())
        self._wait("simulator", self.sim.healthy)

    def start_host_roles(self) -> None:
        """The receiver, the workers and the schedulers of one host (this one)."""
        python = PYTHON
        self.sup.start("web", [*python, "web", "--port", str(self.web_port)], self.receiver_env())
        self._wait("receiver", self.receiver_healthy)
        for i in range(self.spec.fork_workers):
            self.start_worker(f"fork-{i}", fork=True)
        for i in range(self.spec.simple_workers):
            self.start_worker(f"simple-{i}", fork=False)
        for i in range(self.spec.schedulers):
            self.sup.start(f"scheduler-{i}", [*python, "scheduler", "--interval", "0.2"], self.worker_env())

    def start_test_client(self) -> None:
        """The test's own runtime: the merchant's calls (``service``) and reading the store."""
        settings = Settings.from_env(self.worker_env())
        self.rt: Runtime = build_runtime(settings, timers=Timers().scaled(self.spec.time_scale))
        self.service = PaymentService(self.rt)

    def start_worker(self, name: str, *, fork: bool) -> None:
        argv = [sys.executable, "-m", "worker", "work", *(["--fork"] if fork else [])]
        self.sup.start(name, argv, self.worker_env())
        self.workers.append(name)

    def stop(self) -> None:
        try:
            for name in [n for n in self.sup.procs if n.startswith(("fork", "simple", "scheduler"))]:
                self.sup.stop(name, timeout=5)
        finally:
            self.sup.cleanup()
            self.sink.stop()
            self.sim.close()
            if hasattr(self, "rt"):
                self.rt.engine.dispose()

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        if not self.sup.wait_until(ready, timeout, interval=0.1):
            raise RuntimeError(f"the {what} did not come up within {timeout} s (logs in {self.sup.log_dir})")

    def pause_redis(self, seconds: float) -> None:
        """SIGSTOP the redis-server, SIGCONT it after ``seconds``: clients hang instead of failing."""
        process = self.redis_server.process
        pinned = Pid.of(process.pid) if process is not None else None
        if pinned is None:
            raise RuntimeError("redis-server is not running")
        pinned.send(signal.SIGSTOP)
        self.sup.record("redis_pause", "redis", (pinned.pid,), None, detail=f"{seconds:.1f}s")
        timer = threading.Timer(seconds, pinned.send, args=(signal.SIGCONT,))
        timer.daemon = True
        timer.start()

    def receiver_healthy(self) -> bool:
        try:
            return httpx.get(self.receiver_url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    # -- driving ------------------------------------------------------------------------------

    def signed_notification(self, data: dict[str, Any], *, kind: str = "PAYMENT",
                            code: str = "APPLY_SUCCESS") -> tuple[bytes, str]:
        body = dumps({"code": code, "msg": "", "keyVersion": "1", "appId": APP_ID, "merchantNo": MERCHANT_NO,
                      "notifyTime": format_time(self.rt.clock()), "notifyType": kind, "data": data})
        return body, Signer.from_value(self.platform.private_key, setting="platform").sign(body)

    def post_notification(self, path: str, body: bytes, sign: str, *, timeout: float = 15.0) -> int | None:
        """POST to the receiver like Checus does; None when no answer came (refused, reset, timeout)."""
        try:
            response = httpx.post(self.receiver_url + path, content=body, timeout=timeout,
                                  headers={"sign": sign, "content-type": "application/json"})
        except httpx.HTTPError:
            return None
        return response.status_code

    # -- observing ----------------------------------------------------------------------------

    def job_of(self, pid: int) -> str | None:
        """The id of the job the rq worker with this pid is running (from its Redis hash)."""
        try:
            for worker in Worker.all(connection=self.redis):
                if worker.pid == pid:
                    return worker.get_current_job_id()
        except RedisError:
            return None
        return None

    def gateway_calls(self, endpoint: str) -> int:
        return int(self.sim.ledger().get("calls", {}).get(endpoint, 0))

    def state_of(self, out_trade_no: str) -> str | None:
        with read(self.rt.engine) as conn:
            return conn.execute(sa.select(orders.c.state).where(
                orders.c.out_trade_no_key == out_trade_no.upper())).scalar_one_or_none()

    def snapshot(self) -> Snapshot:
        return load_snapshot(self.rt.engine, self.sim, self.sink.deliveries())

    def status(self) -> dict[str, int]:
        """What is still moving: records off the gateway's truth, unprocessed inbox, undelivered events, jobs."""
        truth = {str(o["outTradeNo"]).upper(): o for o in self.sim.orders()}
        truth_refunds = {str(r["outRefundNo"]): r for o in truth.values() for r in o.get("refunds", [])}
        with read(self.rt.engine) as conn:
            local = conn.execute(sa.select(orders.c.out_trade_no, orders.c.state)).all()
            local_refunds = conn.execute(sa.select(refunds.c.out_refund_no, refunds.c.state)).all()
            unprocessed = conn.execute(sa.select(sa.func.count()).select_from(inbox)
                                       .where(inbox.c.processed_at.is_(None))).scalar_one()
            undelivered = conn.execute(sa.select(sa.func.count()).select_from(outbox)
                                       .where(outbox.c.delivered_at.is_(None))).scalar_one()
        off = sum(1 for no, state in local if truth.get(no.upper(), {}).get("status") != state)
        off += sum(1 for no, state in local_refunds
                   if truth_refunds.get(no, {}).get("status", "REFUND_FAILED") != state)
        final = ("SUCCESS", "FAILED", "CLOSED", "REFUND_SUCCESS", "REFUND_FAILED")
        still_open = sum(1 for _no, state in [*local, *local_refunds] if state not in final)
        try:
            queue = make_queue(self.redis)
            queued, started = queue.count, StartedJobRegistry(queue=queue).count
        except RedisError:
            queued = started = -1
        return {"off_truth": off, "inbox_unprocessed": int(unprocessed), "events_undelivered": int(undelivered),
                "queued": queued, "started": started, "open": still_open}

    def wait_quiet(self, timeout: float, *, settle_checks: int = 2, final: bool = False) -> Quiet:
        """Wait (bounded) until nothing is left to do and every record matches the gateway; with ``final``,
        also until every record is in a final state (a record still pending at both ends is not quiet)."""
        began = time.monotonic()
        deadline = began + timeout
        streak, status = 0, {}
        while time.monotonic() < deadline:
            try:
                status = self.status()
                if not final:
                    status.pop("open")
            except (httpx.HTTPError, sa.exc.SQLAlchemyError):
                streak = 0
                time.sleep(1.0)
                continue
            streak = streak + 1 if all(v == 0 for v in status.values()) else 0
            if streak >= settle_checks:
                return Quiet(True, time.monotonic() - began, status)
            time.sleep(0.5)
        return Quiet(False, time.monotonic() - began, status)
