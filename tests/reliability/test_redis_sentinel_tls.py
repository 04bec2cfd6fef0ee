"""Redis through Sentinel over TLS, for real: a primary, a replica and three sentinels listening on
TLS ports only (``port 0``), replicating and monitoring over TLS, with certificates made by
``openssl`` at test time (``sentinel_tls.py``). The product's own clients find the primary through
the TLS sentinels and do a round trip over TLS; plaintext to a TLS port gets nowhere; a client
without the CA (or with the wrong one, or without its certificate where the servers want one) stops
a role at start with one line naming the setting, and exit 78 (``checus-worker work``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker.config import Settings
from worker.gateway.signing import PortalKeyPair
from worker.runtime.redis_clients import async_redis, sync_redis

from .sentinel_tls import TlsSentinelSet


def _set(factory: pytest.TempPathFactory, name: str, *, mutual: bool) -> Iterator[TlsSentinelSet]:
    found = TlsSentinelSet(factory.mktemp(name), mutual=mutual).start()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="module")
def tls_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSentinelSet]:
    yield from _set(tmp_path_factory, "sentinel-tls", mutual=False)


@pytest.fixture(scope="module")
def mutual_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSentinelSet]:
    yield from _set(tmp_path_factory, "sentinel-mtls", mutual=True)


def _round_trips(found: TlsSentinelSet, env: dict[str, str], tag: str) -> None:
    """A sync and an async client of the product write through the sentinels; the primary has it."""
    settings = Settings.from_env(env)
    client = sync_redis(settings)
    client.set(f"{tag}:sync", "through TLS sentinels")
    assert client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"

    async def round_trip() -> bytes | str | None:
        aclient = async_redis(settings)
        try:
            await aclient.set(f"{tag}:async", "too")
            assert aclient.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"
            return await aclient.get(f"{tag}:async")
        finally:
            await aclient.aclose()

    assert asyncio.run(round_trip()) == b"too"
    primary = found.client(found.primary_port)  # the test's own TLS client of the primary the sentinels named
    assert primary.get(f"{tag}:sync") == b"through TLS sentinels" and primary.get(f"{tag}:async") == b"too"
    assert primary.info("replication")["role"] == "master"


def _work(found: TlsSentinelSet, tmp_path: Path, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair,
          change: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **found.env, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "CHECUS_APP_ID": "A", "CHECUS_MERCHANT_NO": "M", "CHECUS_MERCHANT_PRIVATE_KEY": merchant_keys.private_key,
           "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key}
    for name, value in change.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-m", "worker", "work"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _one_line(run: subprocess.CompletedProcess[str], setting: str, says: str) -> None:
    assert run.returncode == 78, run.stderr[-800:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: not_configured: {setting}: {says}"), lines
    assert "Traceback" not in run.stderr


def test_clients_reach_the_primary_through_tls_sentinels(tls_sentinels: TlsSentinelSet) -> None:
    _round_trips(tls_sentinels, tls_sentinels.env, "tls")


def test_plaintext_to_the_tls_ports_gets_nowhere(tls_sentinels: TlsSentinelSet) -> None:
    for port in (*tls_sentinels.sentinel_ports, tls_sentinels.primary_port, tls_sentinels.replica_port):
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2).ping()
    for env in ({**tls_sentinels.env, "REDIS_SENTINEL_TLS": "off"},  # the product in plaintext to the sentinels
                {**tls_sentinels.env, "REDIS_URL": "redis://127.0.0.1/0"}):  # and to the primary they name
        with pytest.raises(redis.ConnectionError):
            sync_redis(Settings.from_env(env)).ping()


@pytest.mark.parametrize(("change", "setting", "says"), [
    ({"REDIS_TLS_CA_FILE": None}, "REDIS_TLS_CA_FILE", "the TLS certificate of the sentinels is not signed by it"),
    ({"REDIS_TLS_CA_FILE": "other_ca"}, "REDIS_TLS_CA_FILE", "the TLS certificate of the sentinels is not signed"),
    ({"REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "REDIS_TLS_CA_FILE", "cannot read /nonexistent/ca.pem"),
])
def test_a_client_without_the_ca_stops_a_role_with_one_line(
        tls_sentinels: TlsSentinelSet, tmp_path: Path, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair,
        change: dict[str, str | None], setting: str, says: str) -> None:
    if change.get("REDIS_TLS_CA_FILE") == "other_ca":
        change = {"REDIS_TLS_CA_FILE": str(tls_sentinels.certs.other_ca)}
    _one_line(_work(tls_sentinels, tmp_path, merchant_keys, platform_keys, change), setting, says)


def test_mutual_tls_through_sentinels_needs_our_certificate(
        mutual_sentinels: TlsSentinelSet, tmp_path: Path, merchant_keys: PortalKeyPair,
        platform_keys: PortalKeyPair) -> None:
    _round_trips(mutual_sentinels, mutual_sentinels.env, "mtls")
    with pytest.raises(redis.ConnectionError):  # the servers do want a client certificate
        mutual_sentinels.client(mutual_sentinels.primary_port, ssl_certfile=None, ssl_keyfile=None).ping()
    # Without one, a role is refused too. Under TLS 1.3 the server's "certificate required" alert
    # races its reset of the connection, so the role sees either a settings error or what looks like
    # an outage (it then waits, logging startup.waiting_for_redis): that is not asserted here.
