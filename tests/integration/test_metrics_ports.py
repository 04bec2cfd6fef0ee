"""Every process role finds its own metrics port when several share one host's settings.

Tried as a new user would: ``CHECUS_METRICS_PORT`` in the one ``.env`` that honcho (or a systemd
environment file) gives every process made ``web`` and ``work`` crash with "Address already in
use", and honcho stopped everything. Real processes, one environment, real scrapes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from worker.gateway.signing import PortalKeyPair
from worker.role_settings import PURPOSES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_settings(merchant: PortalKeyPair, platform: PortalKeyPair) -> dict[str, str]:
    """What ``work`` needs to start (it checks its settings first)."""
    return {"CHECUS_APP_ID": "APP", "CHECUS_MERCHANT_NO": "MERCHANT",
            "CHECUS_MERCHANT_PRIVATE_KEY": merchant.private_key, "CHECUS_PLATFORM_PUBLIC_KEYS": platform.public_key}


def _serving(log: Path) -> dict[str, int]:
    ports = {}
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"metrics.serving"' in line:
            entry = json.loads(line)
            ports[entry["role"]] = int(entry["port"])
    return ports


def test_web_work_and_scheduler_with_one_metrics_port_setting_each_serve_their_own(
        redis_url: str, tmp_path: Path, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    base = _free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "CHECUS_METRICS_PORT": str(base), "CHECUS_RECEIVER_PORT": str(_free_port()),
           "LOG_LEVEL": "INFO", **_worker_settings(merchant_keys, platform_keys)}
    env.pop("CHECUS_METRICS_PORT_WORK", None)
    subprocess.run([sys.executable, "-m", "worker", "db", "upgrade"], env=env, check=True, capture_output=True)
    logs = {role: tmp_path / f"{role}.log" for role in ("scheduler", "work")}
    procs = {role: subprocess.Popen([sys.executable, "-m", "worker", role], env=env, stdout=subprocess.DEVNULL,
                                    stderr=log.open("w")) for role, log in logs.items()}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(role in _serving(log) for role, log in logs.items()):
            assert all(p.poll() is None for p in procs.values()), {r: log.read_text()[-800:] for r, log in logs.items()}
            time.sleep(0.2)
        ports = {role: _serving(log)[role] for role, log in logs.items()}
        assert len(set(ports.values())) == 2 and all(base <= p < base + 100 for p in ports.values()), ports
        for port in ports.values():
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert scraped.status_code == 200 and "checus_locks_lost_total" in scraped.text
        assert all(p.poll() is None for p in procs.values())  # nobody crashed on "Address already in use"
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=20)


def test_a_roles_own_port_is_taken_exactly_and_a_taken_one_is_one_clear_line(redis_url: str, tmp_path: Path) -> None:
    own = _free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "CHECUS_METRICS_PORT": str(_free_port()), "CHECUS_METRICS_PORT_SCHEDULER": str(own)}
    subprocess.run([sys.executable, "-m", "worker", "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "scheduler.log"
    proc = subprocess.Popen([sys.executable, "-m", "worker", "scheduler"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "scheduler" not in _serving(log):
            assert proc.poll() is None, log.read_text()[-800:]
            time.sleep(0.2)
        assert _serving(log) == {"scheduler": own}
        second = subprocess.run([sys.executable, "-m", "worker", "scheduler"], env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert second.returncode == 78, second.stderr[-800:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: not_configured: CHECUS_METRICS_PORT_SCHEDULER: no free port from {own} "
                          f"(Address already in use) — {PURPOSES['CHECUS_METRICS_PORT_SCHEDULER']}"], \
            second.stderr[-800:]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
