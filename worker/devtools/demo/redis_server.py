"""A private redis-server on a free loopback port, with AOF, that can be killed -9 and restarted."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, data_dir: Path, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server, or run .ci/system-deps)")
        self.binary = binary
        self.dir = data_dir
        self.port = port or free_port()
        self.host = host  # the address it listens on (loopback, or a bridge the tests' namespaces reach)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", str(self.dir), "--maxmemory-policy", "noeviction",
             "--enable-debug-command", "local", "--logfile", str(self.dir / "redis.log"),
             # off the loopback (a test's bridge) protected mode would refuse every other address
             "--protected-mode", "yes" if self.host == "127.0.0.1" else "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        self.kill9()  # never leave a server behind that its caller has no handle on
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill9(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> RedisServer:
        """Start again on the same port and data dir after ``kill9()`` or ``stop()``: the AOF is replayed."""
        if self.process is not None:
            raise RuntimeError(f"redis-server on port {self.port} is still running")
        return self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
