"""A PgBouncer in transaction pooling mode in front of one test database, a real process.

PgBouncer refuses to run as root, so when the tests run as root (CI does) it runs as the
``postgres`` user through ``runuser``; its files then live in a directory of their own that user
can reach (pytest's temporary directories are private to root), removed at stop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from worker.devtools.demo.redis_server import free_port


class PgBouncer:
    def __init__(self, root: Path, database_url: str) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed (Debian's pgbouncer; .ci/system-deps installs it)")
        self.binary, self.root = binary, root
        self.upstream = sa.engine.make_url(database_url)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.upstream.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def start(self) -> PgBouncer:
        if os.geteuid() == 0:
            self.root = Path(tempfile.mkdtemp(prefix="checus-pgbouncer-"))
            os.chmod(self.root, 0o777)  # noqa: S103 - the postgres user writes its log and pid here
        self.root.mkdir(parents=True, exist_ok=True)
        user = self.upstream.username or "postgres"
        (self.root / "users.txt").write_text(f'"{user}" ""\n')
        os.chmod(self.root / "users.txt", 0o644)
        conf = self.root / "pgbouncer.ini"
        conf.write_text(
            "[databases]\n"
            f"{self.upstream.database} = host={self.upstream.host or '127.0.0.1'} port={self.upstream.port or 5432} "
            f"dbname={self.upstream.database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 500\n"
            f"logfile = {self.root / 'pgbouncer.log'}\npidfile = {self.root / 'pgbouncer.pid'}\n")
        os.chmod(conf, 0o644)
        argv = [self.binary, str(conf)]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    log = self.root / "pgbouncer.log"
                    raise RuntimeError(f"pgbouncer exited: {log.read_text()[-800:] if log.exists() else ''}") from None
                time.sleep(0.1)
        raise RuntimeError("pgbouncer did not listen within 15 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        if self.root.name.startswith("checus-pgbouncer-"):
            shutil.rmtree(self.root, ignore_errors=True)
