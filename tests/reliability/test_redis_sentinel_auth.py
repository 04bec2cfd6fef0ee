"""Redis through Sentinel with passwords, for real: data nodes with ``requirepass`` (the replica and
the sentinels authenticate with ``masterauth`` / ``sentinel auth-pass``) and sentinels with their own
``requirepass``. The product's clients find the primary through the sentinels and do a round trip;
a wrong or missing password is one line naming the setting, and exit 78 (``checus-worker work``)."""

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

from .sentinel import SentinelSet

DATA_PASSWORD, SENTINEL_PASSWORD = "data-s3cret", "sentinel-s3cret"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    found = SentinelSet(tmp_path_factory.mktemp("sentinel-auth"), password=DATA_PASSWORD,
                        sentinel_password=SENTINEL_PASSWORD).start()
    try:
        yield found
    finally:
        found.stop()


def test_clients_reach_the_primary_through_password_protected_sentinels(sentinels: SentinelSet) -> None:
    settings = Settings.from_env(sentinels.env)
    client = sync_redis(settings)
    client.set("auth:sync", "through sentinel")
    primary = redis.Redis(port=sentinels.primary.port, password=DATA_PASSWORD)
    assert primary.get("auth:sync") == b"through sentinel"  # written on the primary the sentinels named

    async def round_trip() -> bytes | str | None:
        aclient = async_redis(settings)
        try:
            await aclient.set("auth:async", "too")
            return await aclient.get("auth:async")
        finally:
            await aclient.aclose()

    assert asyncio.run(round_trip()) == b"too"
    with pytest.raises(redis.AuthenticationError):  # the data node does want the password
        redis.Redis(port=sentinels.primary.port).get("auth:sync")
    with pytest.raises(redis.ConnectionError):  # and the sentinels theirs
        sync_redis(Settings.from_env({**sentinels.env, "REDIS_SENTINEL_PASSWORD": ""})).ping()


@pytest.mark.parametrize(("wrong", "setting"), [
    ({"REDIS_SENTINEL_PASSWORD": "not-it"}, "REDIS_SENTINEL_PASSWORD"),
    ({"REDIS_SENTINEL_PASSWORD": ""}, "REDIS_SENTINEL_PASSWORD"),
    ({"REDIS_URL": "redis://:not-it@127.0.0.1/0"}, "REDIS_URL"),
    ({"REDIS_URL": "redis://127.0.0.1/0"}, "REDIS_URL"),
])
def test_a_wrong_or_missing_password_is_one_line_naming_the_setting(
        sentinels: SentinelSet, tmp_path: Path, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair,
        wrong: dict[str, str], setting: str) -> None:
    env = {**os.environ, **sentinels.env, **wrong, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "CHECUS_APP_ID": "A", "CHECUS_MERCHANT_NO": "M", "CHECUS_MERCHANT_PRIVATE_KEY": merchant_keys.private_key,
           "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key}
    run = subprocess.run([sys.executable, "-m", "worker", "work"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 78, run.stderr[-800:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: not_configured: {setting}: "), lines
    assert "Traceback" not in run.stderr
    assert DATA_PASSWORD not in run.stderr and SENTINEL_PASSWORD not in run.stderr and "not-it" not in run.stderr
