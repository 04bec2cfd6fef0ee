"""Roles started before what they need wait for it with one clear line, then go on (real processes).

Tried as a new user would: `honcho start` before `db upgrade` had the scheduler log `no such table:
orders` and honcho stopped everything; `checus-worker work` against an unreachable Redis printed
nothing at all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worker.gateway.signing import PortalKeyPair


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _until(log: Path, proc: subprocess.Popen[bytes], event: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(log) if e.get("event") == event]
        if found:
            return found[0]
        assert proc.poll() is None, log.read_text()[-1500:]
        time.sleep(0.2)
    raise AssertionError(f"no {event} in {log.read_text()[-1500:]}")


def test_a_scheduler_started_before_db_upgrade_waits_says_what_to_do_and_then_runs(
        redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    log = tmp_path / "scheduler.log"
    proc = subprocess.Popen([sys.executable, "-m", "worker", "scheduler"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    try:
        waiting = _until(log, proc, "startup.waiting_for_schema")
        assert waiting["schema"] == "missing" and waiting["action"] == "run `checus-worker db upgrade`"
        assert "Traceback" not in log.read_text() and "no such table" not in log.read_text()
        subprocess.run([sys.executable, "-m", "worker", "db", "upgrade"], env=env, check=True, capture_output=True)
        _until(log, proc, "scheduler.started", timeout=20)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_worker_without_redis_says_where_it_is_connecting_and_waits(
        tmp_path: Path, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nobody listens here once the socket is closed
    env = {**os.environ, "REDIS_URL": f"redis://:s3cret@127.0.0.1:{closed}/0",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "CHECUS_APP_ID": "APP",
           "CHECUS_MERCHANT_NO": "MERCHANT", "CHECUS_MERCHANT_PRIVATE_KEY": merchant_keys.private_key,
           "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key}
    log = tmp_path / "work.log"
    proc = subprocess.Popen([sys.executable, "-m", "worker", "work"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    try:
        waiting = _until(log, proc, "startup.waiting_for_redis")
        assert waiting["redis"] == f"127.0.0.1:{closed}/0", waiting
        time.sleep(1)
        assert proc.poll() is None and "Traceback" not in log.read_text() and "s3cret" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
