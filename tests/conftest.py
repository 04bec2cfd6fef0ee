"""Shared fixtures: keys generated at test time (never committed), the simulator on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from tests.support.postgres import create_database, drop_database
from worker.devtools.demo.redis_server import RedisServer
from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair


@pytest.fixture(scope="session")
def merchant_keys() -> PortalKeyPair:
    """The merchant's pair: signs requests; Checus holds the public half."""
    return generate_portal_key_pair()


@pytest.fixture(scope="session")
def platform_keys() -> PortalKeyPair:
    """The platform's pair: signs responses and notifications."""
    return generate_portal_key_pair()


@pytest.fixture(scope="session")
def other_keys() -> PortalKeyPair:
    """A stranger's pair, for signatures that must not verify."""
    return generate_portal_key_pair()


@pytest.fixture
def sim(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> Iterator[object]:
    """A fresh simulator on a free loopback port, notifications on a 1000x fast clock."""
    from tests.support.simkit import simulator_config
    from worker.devtools.simulator.server import start_background

    running = start_background(simulator_config(merchant_keys, platform_keys, time_scale=0.001))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server (AOF on) on a free loopback port for the whole run."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied before each test."""
    redis_lib.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private database on the local PostgreSQL server (CI makes sure one answers)."""
    url, name = create_database()
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite (a fresh file) and on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


def _reset_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
