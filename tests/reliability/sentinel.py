"""A Redis Sentinel set on loopback: a primary, a replica and three sentinels, real processes.

``redis-server --sentinel`` is the same binary Debian's ``redis-sentinel`` package links to, so
nothing beyond ``redis-server`` is needed. Sentinels are quick here (down after 1 s, quorum 2) so
that a failover takes seconds, not the production default of 30 s.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from worker.devtools.demo.redis_server import RedisServer, free_port

MASTER = "checus"
DOWN_AFTER_MS = 1000


def _wait(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout} s")


class SentinelSet:
    """With ``password``, the data nodes ``requirepass`` it (the replica and the sentinels
    authenticate to the primary with it) and the sentinels ``requirepass`` ``sentinel_password``."""

    def __init__(self, root: Path, *, password: str | None = None, sentinel_password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (run .ci/system-deps)")
        self.binary, self.root = binary, root
        self.primary = RedisServer(root / "primary")
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.password, self.sentinel_password = password, sentinel_password

    @property
    def env(self) -> dict[str, str]:
        """What every role is given: the sentinels and the master's name (and the passwords: the data
        nodes' in REDIS_URL, whose address Sentinel replaces)."""
        env = {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
               "REDIS_SENTINEL_MASTER": MASTER}
        if self.password:
            env["REDIS_URL"] = f"redis://:{self.password}@127.0.0.1:{self.primary.port}/0"
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def _auth(self) -> list[str]:
        return ["--requirepass", self.password, "--masterauth", self.password] if self.password else []

    def start(self) -> SentinelSet:
        self.primary.start()
        if self.password:  # set on the running primary: RedisServer starts without a password
            redis.Redis(port=self.primary.port).config_set("masterauth", self.password)
            redis.Redis(port=self.primary.port).config_set("requirepass", self.password)
        (self.root / "replica").mkdir(parents=True, exist_ok=True)
        self.procs.append(subprocess.Popen(
            [self.binary, "--port", str(self.replica_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.root / "replica"), "--replicaof", "127.0.0.1", str(self.primary.port),
             "--logfile", str(self.root / "replica" / "redis.log"), *self._auth()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        replica = redis.Redis(port=self.replica_port, socket_connect_timeout=0.5, password=self.password)
        _wait(lambda: replica.info("replication").get("master_link_status") == "up", "the replica did not sync")
        for port in self.sentinel_ports:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                            f"sentinel failover-timeout {MASTER} 5000\nsentinel parallel-syncs {MASTER} 1\n"
                            + (f"sentinel auth-pass {MASTER} {self.password}\n" if self.password else "")
                            + (f"requirepass {self.sentinel_password}\n" if self.sentinel_password else ""))
            self.procs.append(subprocess.Popen([self.binary, str(conf), "--sentinel",
                                                "--logfile", str(self.root / f"sentinel-{port}.log")],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.sentinel_ports:
            s = redis.Redis(port=port, socket_connect_timeout=0.5, password=self.sentinel_password)
            _wait(lambda s=s: len(s.sentinel_sentinels(MASTER)) == 2 and len(s.sentinel_slaves(MASTER)) == 1,
                  f"sentinel {port} did not see its peers and the replica")
        return self

    def master_port(self) -> int:
        s = redis.Redis(port=self.sentinel_ports[0], socket_connect_timeout=0.5, password=self.sentinel_password)
        address = s.sentinel_get_master_addr_by_name(MASTER)
        assert isinstance(address, tuple), address
        return int(address[1])

    def wait_promoted(self, timeout: float = 30.0) -> float:
        """Seconds until the sentinels name the replica as the master."""
        began = time.monotonic()
        _wait(lambda: self.master_port() == self.replica_port, "no failover", timeout)
        return time.monotonic() - began

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.primary.stop()
