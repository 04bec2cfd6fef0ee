"""A deployment over two hosts: each runs ``web``, ``work`` and ``scheduler`` in a network namespace
of its own; the simulator, the event sink, Redis and PostgreSQL stay on the bridge both reach.

Each host's receiver listens on that host's address, and the host's workers give Checus that
receiver as ``notifyUrl``; the test makes payments through either host (``service_for``), so
Checus's notifications are spread over both receivers.
"""

from __future__ import annotations

import functools
from pathlib import Path

import httpx

from worker.bootstrap import build_runtime
from worker.config import Settings
from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.runtime import Runtime, Timers
from worker.service import PaymentService

from .cluster import PYTHON, Cluster, ClusterSpec
from .netns import Hosts


class TwoHostCluster(Cluster):
    def __init__(self, *, root: Path, redis: RedisServer, database_url: str, spec: ClusterSpec,
                 hosts: Hosts) -> None:
        spec.service_host = hosts.services
        super().__init__(root=root, redis=redis, database_url=database_url, spec=spec)
        self.hosts = hosts
        self.ports = {name: free_port() for name in hosts.hosts}
        self.receiver_url = self.receiver_of(next(iter(hosts.hosts)))
        self.services: dict[str, PaymentService] = {}
        self._runtimes: list[Runtime] = []

    def receiver_of(self, name: str) -> str:
        return f"http://{self.hosts.hosts[name].address}:{self.ports[name]}"

    def host_env(self, name: str) -> dict[str, str]:
        return {**self.worker_env(), "CHECUS_NOTIFY_BASE_URL": self.receiver_of(name)}

    def start_host_roles(self) -> None:
        for name, host in self.hosts.hosts.items():
            on = self.hosts.prefix(name)
            self.sup.start(f"web-{name}", [*on, *PYTHON, "web", "--host", host.address,
                                           "--port", str(self.ports[name])], self.receiver_env())
            self._wait(f"receiver of host {name}", functools.partial(self._healthy, name))
            for i in range(self.spec.fork_workers):
                self.sup.start(f"fork-{name}-{i}", [*on, *PYTHON, "work", "--fork"], self.host_env(name))
                self.workers.append(f"fork-{name}-{i}")
            for i in range(self.spec.simple_workers):
                self.sup.start(f"simple-{name}-{i}", [*on, *PYTHON, "work"], self.host_env(name))
                self.workers.append(f"simple-{name}-{i}")
            self.sup.start(f"scheduler-{name}", [*on, *PYTHON, "scheduler", "--interval", "0.2"],
                           self.host_env(name))

    def start_test_client(self) -> None:
        super().start_test_client()
        for name in self.hosts.hosts:
            settings = Settings.from_env(self.host_env(name))
            rt = build_runtime(settings, timers=Timers().scaled(self.spec.time_scale))
            self._runtimes.append(rt)
            self.services[name] = PaymentService(rt)

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(self.receiver_of(name) + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def holder_host(self, holder: str | None) -> str | None:
        """Which host a scheduler term's holder (``hostname:pid``) ran on."""
        if holder is None:
            return None
        pid = int(holder.rsplit(":", 1)[1])
        for name in self.hosts.hosts:
            started = self.sup.procs[f"scheduler-{name}"].pid
            if started is not None and started.pid == pid:
                return name
        return None

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for rt in self._runtimes:
                rt.engine.dispose()
