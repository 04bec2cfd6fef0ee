"""Secrets (reliability notes §6, goal G12): no ``sign``, key or payment token in any log line or error body.

Notifications carrying a real-looking ``paymentTokenID`` are pushed through the receiver's
paths (accepted, applied with the token saved, duplicate, unknown order, every kind of refusal,
413/415, Redis and store outages, a job failing) while structlog events are captured with
``structlog.testing.capture_logs()`` (raw, before any redaction processor could hide a
mistake) and stdlib records (rq, uvicorn, redis-py, SQLAlchemy) with ``caplog``. A secret
counts as leaked if any 16-character window of it shows up anywhere.

The ``rig`` (its own redis-server, ``private_redis``) comes from ``conftest.py``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, MutableMapping, Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from tests.integration.test_receiver_harness import TOKEN, Rig, now, payment_note, signer_of, store_down
from worker.devtools.demo.redis_server import RedisServer
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import dumps
from worker.store.schema import payment_tokens

WINDOW = 16


def windows(text: str) -> set[str]:
    return {text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1)}


def leaked(haystack: str, secrets: Iterable[str], public: Iterable[str] = ()) -> set[str]:
    """Windows of ``secrets`` found in ``haystack`` (windows that are also in public text do not count)."""
    shared = set().union(*(windows(p) for p in public))
    return (set().union(*(windows(s) for s in secrets)) - shared) & windows(haystack)


def event_text(event: MutableMapping[str, Any]) -> str:
    exc = event.get("exc_info")
    if isinstance(exc, BaseException):
        return repr(event) + "".join(traceback.format_exception(exc))
    if isinstance(exc, tuple) and exc[1] is not None:
        return repr(event) + "".join(traceback.format_exception(exc[1]))
    return repr(event)


class Witness:
    """Every sign value sent and every non-2xx body received, for the final scan."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.signs: list[str] = []
        self.error_bodies: list[str] = []

    def send(self, body: bytes, sign: str | None, **kwargs: Any) -> httpx.Response:
        if sign:
            self.signs.append(sign)
        response = self.rig.post(body, sign=sign, **kwargs)
        if response.status_code >= 300:
            self.error_bodies.append(response.text)
        return response

    def deliver(self, note: dict[str, Any], signer: Any = None) -> httpx.Response:
        raw, sign = self.rig.signed(note, signer)
        return self.send(raw, sign)


def assert_nothing_leaked(events: Sequence[MutableMapping[str, Any]], caplog: pytest.LogCaptureFixture,
                          witness: Witness, keys: Iterable[PortalKeyPair]) -> None:
    keys = list(keys)
    logs = "\n".join(event_text(e) for e in events) + "\n" + caplog.text
    logs += "\n".join(r.getMessage() for r in caplog.records)
    for where, text in (("logs", logs), ("error bodies", "\n".join(witness.error_bodies))):
        assert not leaked(text, witness.signs), f"a sign value in the {where}"
        assert not leaked(text, [k.private_key for k in keys], [k.public_key for k in keys]), f"a key in the {where}"
        assert not leaked(text, [TOKEN]), f"a payment token in the {where}"


def test_no_secret_in_logs_or_error_bodies_on_the_normal_paths(rig: Rig, caplog: pytest.LogCaptureFixture,
                                                               platform_keys: PortalKeyPair,
                                                               other_keys: PortalKeyPair) -> None:
    """Accepted (token saved), duplicate, unknown order, 401/400 refusals, 413 and 415 with a token on board."""
    caplog.set_level(logging.DEBUG)
    witness = Witness(rig)
    rig.create_order("RX_ORDER_1", save_card=True)
    with capture_logs() as events:
        good = payment_note("RX_ORDER_1", token=TOKEN)
        assert witness.deliver(good).status_code == 200
        assert witness.deliver(good).status_code == 200  # duplicate
        assert witness.deliver(payment_note("RX_UNKNOWN", token=TOKEN)).status_code == 200
        rig.drain()
        raw = dumps(payment_note("RX_ORDER_1", status="FAILED", token=TOKEN))
        refused = [
            witness.send(raw, None),
            witness.send(raw, "not-a-signature"),
            witness.send(raw, signer_of(other_keys).sign(raw)),
            witness.send(raw.replace(b"FAILED", b"CLOSED"), rig.signer.sign(raw)),
            witness.deliver(payment_note("RX_ORDER_1", status="PENDING", token=TOKEN)),
            witness.deliver(payment_note("RX_ORDER_1", app_id="NOT_US", token=TOKEN)),
            witness.deliver(payment_note("RX_ORDER_1", token=TOKEN, notify_time=now() - timedelta(days=3))),
            witness.send(raw + b" " * 70_000, rig.signer.sign(raw + b" " * 70_000)),
            witness.send(raw, rig.signer.sign(raw), content_type="text/plain"),
        ]
    assert [r.status_code for r in refused] == [401, 401, 401, 401, 400, 400, 400, 413, 415]
    assert [r.token_hint for r in rig.rows(payment_tokens)] == [TOKEN[-4:]]  # the token path really ran
    names = {e["event"] for e in events}
    assert {"notification.acked", "notification.rejected", "job.done", "notification.deferred"} <= names
    assert_nothing_leaked(events, caplog, witness, [platform_keys, other_keys])


def test_no_secret_in_logs_or_error_bodies_on_the_failure_paths(rig: Rig, private_redis: RedisServer,
                                                                caplog: pytest.LogCaptureFixture,
                                                                platform_keys: PortalKeyPair) -> None:
    """Redis down (503), store down (503), and a job that fails because the store vanished under it."""
    caplog.set_level(logging.DEBUG)
    witness = Witness(rig)
    rig.create_order("RX_ORDER_1", save_card=True)
    with capture_logs() as events:
        assert witness.deliver(payment_note("RX_ORDER_1", token=TOKEN)).status_code == 200  # queued, not run
        with store_down(rig):
            assert witness.deliver(payment_note("RX_ORDER_2", token=TOKEN)).status_code == 503
            rig.drain()  # the job for RX_ORDER_1 fails on the missing store
        private_redis.kill9()
        assert witness.deliver(payment_note("RX_ORDER_3", token=TOKEN)).status_code == 503
        private_redis.start()
    assert any("store_unavailable" in b for b in witness.error_bodies)
    assert any("queue_unavailable" in b for b in witness.error_bodies)
    assert "OperationalError" in caplog.text and "exception raised while executing" in caplog.text  # the job failed
    with sa.create_engine(rig.rt.engine.url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(payment_tokens)).scalar_one() == 0
    assert_nothing_leaked(events, caplog, witness, [platform_keys])
