"""A private PostgreSQL server (initdb in a directory of its own, a free port) that a test may stop
with ``-m immediate`` (a crash: no checkpoint, recovery from the WAL at start) and start again.

The machine's shared server is never restarted by a test. PostgreSQL refuses to run as root, so
as root (CI) it runs as the ``postgres`` user in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from worker.devtools.demo.redis_server import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (.ci/system-deps installs postgresql)")
    return found[-1]


class PrivatePostgres:
    def __init__(self, *, host: str = "127.0.0.1", settings: dict[str, str] | None = None) -> None:
        self.host = host  # the address it listens on
        self.settings = settings or {}  # postgresql.conf settings, e.g. idle_in_transaction_session_timeout
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="checus-pg-"))
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            if self.as_postgres:
                shutil.chown(self.root, "postgres", "postgres")
            self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
            if self.host != "127.0.0.1":  # clients on the test's bridge (its network namespaces)
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.host}/24 trust\n")
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=on {options}",
                  "start")
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"))
        deadline = time.monotonic() + 30
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        engine.dispose()
        return self

    def crash(self) -> None:
        """Stop at once, as a power cut would: the next start recovers from the WAL."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
