"""The README's curl walkthrough, run as written against real processes.

``checus-worker api`` and ``checus-worker api-keys create`` run as subprocesses (the role as
deployed, over the stack's store and Redis); the simulator is the gateway; this process drains
the rq jobs while bash runs the README's block (curl and jq, nothing mocked).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from worker.devtools.demo.redis_server import free_port
from worker.devtools.demo.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", re.S)


def walkthrough() -> str:
    match = BLOCK.search((ROOT / "README.md").read_text())
    assert match, "README.md has the walkthrough block"
    return match.group(1)


@pytest.fixture
def environment(stack: EmbeddedStack, tmp_path: Path) -> dict[str, str]:
    """The stack's settings, and `checus-worker` meaning this checkout's CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "checus-worker"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m worker "$@"\n')
    wrapper.chmod(0o755)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHECUS_")}
    return {**inherited, **stack.environment(notify_base_url=stack.receiver.base_url),
            "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}


@pytest.fixture
def api_process(environment: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "worker", "api", "--port", str(port)], env=environment,
                               stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail(f"checus-worker api did not start: {(tmp_path / 'api.log').read_text()[-2000:]}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_the_readme_walkthrough_runs_as_written(stack: EmbeddedStack, environment: dict[str, str],
                                                api_process: str, tmp_path: Path) -> None:
    script = subprocess.Popen(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=tmp_path,
                              env={**environment, "API": api_process}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while script.poll() is None and time.monotonic() < deadline:
        stack.drain()  # the workers' part: notifications applied, refunds sent
        time.sleep(0.05)
    if script.poll() is None:
        script.kill()
    out, err = script.communicate()
    (tmp_path / "walkthrough.out").write_text(out)  # kept for reading after a run
    assert script.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    created = json.loads(lines[0])
    assert created["state"] == "PENDING" and created["redirect_url"] and created["amount"] == "25.00"
    assert "cashier: 200" in lines
    assert json.loads(lines[2]) == {"state": "SUCCESS", "amount": "25.00",
                                    "history": ["UNKNOWN", "PENDING", "SUCCESS"]}
    assert "payment.succeeded" in json.loads(lines[3])["types"]
    assert json.loads(lines[4])["out_refund_no"] == "REFUND_1001_1"
    assert json.loads(lines[6])["type"].endswith("/validation-failed")
    view = stack.service.get_refund("REFUND_1001_1")
    assert view is not None and view.refund.amount == 5
