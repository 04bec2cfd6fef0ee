"""Fixtures of the reliability harness: a Redis of its own (killable), a private PostgreSQL
database, an artifacts directory per test, and a terminal summary of every run's figures."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import create_database, drop_database
from worker.devtools.demo.redis_server import RedisServer

from .settings import artifacts_root

SUMMARIES: list[str] = []


def note(line: str) -> None:
    """A line for the end-of-run summary (seeds, figures): shown even with ``-q``."""
    SUMMARIES.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("reliability harness")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where this test keeps its logs, report.json and Redis data (``CHECUS_RELIABILITY_ARTIFACTS``)."""
    root = artifacts_root()
    if root is None:
        return tmp_path
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def own_redis(artifacts: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (AOF on): it may be killed -9, paused and restarted."""
    server = RedisServer(artifacts / "redis").start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.kill()
            server.process.wait(timeout=10)
            server.process = None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for a multi-process test (CI starts the server)."""
    url, name = create_database()
    try:
        yield url
    finally:
        drop_database(name)
