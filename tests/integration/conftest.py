"""Fixtures and checks the integration tests share.

Simulator tests: the checks every answer and notification must pass, and fixtures built on the
shared ``sim`` (a caller, a notification sink, a browser/control client). A module whose answers
are checked differently overrides ``answer_check``; one whose sink must accept spoiled
notifications overrides ``sink``.

Receiver tests: ``rig`` is the receiver in front of a redis-server of the test's own and a fresh
SQLite store (modules that want another rig define their own); ``store_rig`` is the receiver in
front of the session's Redis and each store.

What a fixture needs is imported when it is first used, as in ``tests/conftest.py``: a test
module never loads the simulator, the OpenAPI checks or the receiver rig unless it uses them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from tests.integration.test_receiver_harness import Rig
    from tests.support.notification_sink import NotificationSink
    from tests.support.simkit import Answer, Inspector, MerchantCaller
    from worker.devtools.demo.redis_server import RedisServer
    from worker.devtools.simulator.server import RunningSimulator
    from worker.gateway.signing import PortalKeyPair


def signed_as_documented(endpoint: str, data: Mapping[str, Any], answer: Answer) -> None:
    """The answer carries a valid platform signature and has the documented shape."""
    from tests.openapi import path_key_for, validate_response

    assert answer.signature_ok, "every answer is signed with the platform key"
    validate_response(path_key_for(endpoint, data), answer.body)


def conform(endpoint: str, data: Mapping[str, Any], answer: Answer) -> None:
    """An HTTP 200, signed, and shaped as documented."""
    assert answer.status_code == 200
    signed_as_documented(endpoint, data, answer)


def checked(receiver: NotificationSink) -> None:
    """Every notification the sink received verifies and has the documented shape."""
    from tests.openapi import notification_kind, validate_notification

    for note in receiver.received:
        assert note.signature_ok
        validate_notification(notification_kind(note.body), note.body)


@pytest.fixture
def answer_check() -> Inspector:
    """What the ``merchant`` fixture checks every answer with."""
    return conform


@pytest.fixture
def merchant(
    sim: RunningSimulator, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair, answer_check: Inspector
) -> Iterator[MerchantCaller]:
    from tests.support.simkit import caller_for

    caller = caller_for(sim, merchant_keys.private_key, platform_keys.public_key, inspect=answer_check)
    yield caller
    caller.close()


@pytest.fixture
def sink(platform_keys: PortalKeyPair) -> Iterator[NotificationSink]:
    """A notification sink; what it received is checked when the test is done."""
    from tests.support.notification_sink import NotificationSink

    receiver = NotificationSink(platform_keys.public_key)
    yield receiver
    receiver.close()
    checked(receiver)


@pytest.fixture
def web(sim: RunningSimulator) -> Iterator[httpx.Client]:
    """A browser and control-API client (one client: building one costs tens of ms)."""
    import httpx

    from worker.devtools.simulator.notifier import tls_context

    with httpx.Client(base_url=sim.base_url, verify=tls_context()) as client:
        yield client


# -- receiver tests


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server no other test talks to: its command statistics are this test's alone, and
    it can be killed without harming the others."""
    from worker.devtools.demo.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rig(private_redis: RedisServer, tmp_path: Path, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    from tests.integration.test_receiver_harness import open_rig

    with open_rig(redis_url=private_redis.url, database_url=f"sqlite:///{tmp_path / 'store.db'}",
                  platform=platform_keys) as r:
        yield r


@pytest.fixture
def store_rig(redis_url: str, database_url: str, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    from tests.integration.test_receiver_harness import open_rig

    with open_rig(redis_url=redis_url, database_url=database_url, platform=platform_keys) as r:
        yield r
