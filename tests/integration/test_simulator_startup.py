"""``checus-worker sim`` logs JSON lines, names its settings at start, and says when no notification can leave."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.support.simkit import simulator_config
from worker.devtools.serving import bind
from worker.devtools.simulator.startup import announce
from worker.gateway.signing import PortalKeyPair

REPO = Path(__file__).resolve().parents[2]


def first_lines(env: dict[str, str], tmp_path: Path, wanted: int) -> tuple[list[dict[str, Any]], str]:
    """Start the real command, read its first ``wanted`` stderr lines as JSON, stop it; (lines, stdout)."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    # a short relative keys dir: the log redaction takes any long path-like run for Base64 and hides it
    command = [sys.executable, "-m", "worker", "sim", "--port", str(port), "--keys-dir", "keys"]
    env = env | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[dict[str, Any]] = []
    read: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    # a thread reads whole lines: select() on a buffered pipe misses a line already in the buffer
    def pump() -> None:
        for line in iter(stderr.readline, ""):
            read.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 90  # a loaded 2-core machine takes tens of seconds to start Python
        while len(lines) < wanted and time.monotonic() < deadline:
            try:
                line = read.get(timeout=0.5)
            except queue.Empty:
                continue
            lines.append(json.loads(line))  # every line is JSON, or this fails
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    return lines, out


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep} | {"PYTHONUNBUFFERED": "1"}


def test_without_a_notify_base_url_the_simulator_says_no_notification_will_be_sent(tmp_path: Path) -> None:
    lines, out = first_lines(base_env(), tmp_path, wanted=2)
    assert len(lines) == 2, lines
    started, off = lines[0], lines[1]
    assert started["event"] == "sim.started" and started["logger"] == "worker.devtools.simulator"
    client = started["client_settings"]
    assert client["CHECUS_NOTIFY_BASE_URL"] is None
    assert client["CHECUS_GATEWAY_URL"].startswith("http://127.0.0.1:")
    assert client["CHECUS_MERCHANT_PRIVATE_KEY_FILE"] == "keys/merchant_private_key.txt"
    assert off["event"] == "sim.notifications.off" and off["level"] == "warning"
    assert off["kinds"] == ["payment", "refund"]
    assert "no payment or refund notification will be sent" in off["message"]
    assert out == ""  # nothing but the JSON lines
    private = (tmp_path / "keys" / "merchant_private_key.txt").read_text().split()[0]
    assert private[:40] not in json.dumps(lines)


def test_with_a_notify_base_url_it_is_printed_and_nothing_is_said_to_be_off(tmp_path: Path) -> None:
    env = base_env() | {"CHECUS_NOTIFY_BASE_URL": "http://127.0.0.1:8080"}
    lines, _ = first_lines(env, tmp_path, wanted=1)
    assert lines[0]["client_settings"]["CHECUS_NOTIFY_BASE_URL"] == "http://127.0.0.1:8080"


def test_only_the_kind_without_a_destination_is_called_off(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    config = simulator_config(merchant_keys, platform_keys, default_notify_url="http://127.0.0.1:9/notify")
    with capture_logs() as logs:
        announce(config, host="127.0.0.1", port=8090, environ={})
    assert [e["event"] for e in logs] == ["sim.started", "sim.notifications.off"]
    assert logs[1]["kinds"] == ["refund"] and logs[1]["unset"] == [
        "CHECUS_NOTIFY_BASE_URL", "CHECUS_SIM_DEFAULT_REFUND_NOTIFY_URL"]
    assert logs[0]["simulator_settings"]["CHECUS_SIM_DEFAULT_NOTIFY_URL"] == "http://127.0.0.1:9/notify"
    with capture_logs() as logs:
        announce(config, host="127.0.0.1", port=8090, environ={"CHECUS_NOTIFY_BASE_URL": "http://web:8080"})
    assert [e["event"] for e in logs] == ["sim.started"]
