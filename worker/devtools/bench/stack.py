"""The stack under test: Redis, the store, and the product's own process roles on loopback.

Why real processes started the way production starts them (``python -m worker web|work|scheduler|
sim`` with settings in the environment, like ``EmbeddedStack.spawn_workers``): the receiver must
run behind its production server (uvicorn with uvloop and httptools, ``commands/roles.py``), and
workers must pay rq's real per-job costs and their own interpreter's CPU. Redis is a private
``redis-server`` with the production persistence settings (AOF, ``everysec``). PostgreSQL runs in
a scratch database created here and dropped afterwards, unless ``--database-url`` names one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from redis import Redis
from sqlalchemy.engine import Engine

from worker.devtools.bench.options import BenchOptions
from worker.devtools.bench.procs import Supervisor, wait_http
from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair
from worker.store.db import create_engine, normalize_url
from worker.store.migrate import upgrade

APP_ID = "BENCH_APP"
MERCHANT_NO = "BENCH_MERCHANT"
WEB_APPLICATION_NAME = "checus-bench-web"  # PGAPPNAME of the receiver: its SQL is visible in pg_stat_activity


@contextlib.contextmanager
def scratch_postgres(admin_url: str, purpose: str) -> Iterator[str]:
    """A new, empty database on the server at ``admin_url``; dropped on exit."""
    name = f"checus_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(normalize_url(admin_url)).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class BenchStack:
    """Owns every process and resource of one run; ``close()`` undoes all of it."""

    def __init__(self, options: BenchOptions, run_dir: Path) -> None:
        self.options = options
        self.run_dir = run_dir
        self.supervisor = Supervisor(run_dir / "logs")
        self.merchant: PortalKeyPair = generate_portal_key_pair()
        self.platform: PortalKeyPair = generate_portal_key_pair()
        self._exit = contextlib.ExitStack()
        self.redis_server: RedisServer | None = None
        self.web_port = free_port()
        self.sim_port = free_port()
        self.database_url = ""
        self.worker_count = 0

    # -- resources ---------------------------------------------------------------------------

    def open_store(self) -> Engine:
        """Start Redis, create the database and migrate it; returns an engine for seeding and reads."""
        self.redis_server = RedisServer(self.run_dir / "redis").start()
        self._exit.callback(self.redis_server.stop)
        assert self.redis_server.process is not None
        self.supervisor.external["redis"] = self.redis_server.process.pid
        if self.options.db == "sqlite":
            self.database_url = f"sqlite:///{self.run_dir / 'bench.db'}"
        elif self.options.database_url:
            self.database_url = self.options.database_url
        else:
            self.database_url = self._exit.enter_context(scratch_postgres(self.options.postgres_admin_url, "store"))
        self.engine = create_engine(self.database_url)
        self._exit.callback(self.engine.dispose)
        upgrade(self.engine)
        self.redis = Redis.from_url(self.redis_url)
        return self.engine

    @property
    def redis_url(self) -> str:
        assert self.redis_server is not None
        return self.redis_server.url

    @property
    def postgres_database(self) -> str | None:
        """The store's database name on PostgreSQL (its backends' process titles carry it)."""
        if self.engine.dialect.name != "postgresql":
            return None
        return self.engine.url.database

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def environment(self) -> dict[str, str]:
        """The product's settings for every role, as production passes them."""
        return {
            **os.environ,
            "CHECUS_GATEWAY_URL": f"http://127.0.0.1:{self.sim_port}", "CHECUS_APP_ID": APP_ID,
            "CHECUS_MERCHANT_NO": MERCHANT_NO, "CHECUS_MERCHANT_PRIVATE_KEY": self.merchant.private_key,
            "CHECUS_PLATFORM_PUBLIC_KEYS": self.platform.public_key, "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url, "CHECUS_NOTIFY_BASE_URL": self.receiver_url,
            "CHECUS_RECEIVER_HOST": "127.0.0.1", "CHECUS_RECEIVER_PORT": str(self.web_port),
            "CHECUS_RECEIVER_PROCESSES": str(self.options.web_processes),
            "LOG_LEVEL": self.options.log_level, "PYTHONUNBUFFERED": "1",
        }

    # -- processes ---------------------------------------------------------------------------

    def start_processes(self) -> None:
        env = self.environment()
        sim_env = {**env, "CHECUS_SIM_MERCHANT_PUBLIC_KEYS": self.merchant.public_key,
                   "CHECUS_SIM_PLATFORM_PRIVATE_KEY": self.platform.private_key}
        self.supervisor.start("sim", [sys.executable, "-m", "worker", "sim", "--port", str(self.sim_port),
                                      "--app-id", APP_ID, "--merchant-no", MERCHANT_NO,
                                      "--keys-dir", str(self.run_dir / "sim-keys")], sim_env)
        self.supervisor.start("web", [sys.executable, "-m", "worker", "web"],
                              {**env, "PGAPPNAME": WEB_APPLICATION_NAME})
        self.supervisor.start("scheduler", [sys.executable, "-m", "worker", "scheduler"], env)
        self.start_workers(self.options.workers)
        wait_http(f"http://127.0.0.1:{self.sim_port}/__sim/health", alive=self.supervisor)
        wait_http(f"{self.receiver_url}/healthz", alive=self.supervisor)

    def start_workers(self, count: int) -> None:
        """Replace the running workers by ``count`` new ones of the configured class."""
        self.stop_workers()
        argv = [sys.executable, "-m", "worker", "work", *(["--fork"] if self.options.fork else [])]
        env = self.environment()
        for i in range(count):
            self.supervisor.start(f"work-{i}", argv, env)
        self.worker_count = count
        self.wait_workers(count)

    def wait_workers(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` rq workers have registered (they have imported everything and listen)."""
        import time

        from rq import Worker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervisor.check_alive()
            registered = {w.pid for w in Worker.all(connection=self.redis)}
            ours = {pid for name, pid in self.supervisor.pids().items() if name.startswith("work-")}
            if len(ours) >= count and ours <= registered:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{count} rq workers did not register within {timeout:.0f} s")

    def stop_workers(self) -> None:
        self.supervisor.stop_matching("work-")
        self.worker_count = 0

    def close(self) -> None:
        try:
            self.supervisor.close()
        finally:
            self._exit.close()
