"""The ``Ingestor``'s decisions before anything is kept: pure, with a fixed clock and no Redis or store.

Refusals must be decided from the bytes, the ``sign`` header and the clock alone, so here
Redis, the store and the queue are tripwires: touching any of them ends the test. Only an
acceptable notification gets as far as the store (the tripwire then proves the checks let it
through). Also pinned here: the dedupe key names the fact, not the delivery, and the verdict
bodies (the exact ack; refusals that never echo the input).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy.engine import Engine

from worker.gateway.signing import PortalKeyPair, Signer, Verifier
from worker.gateway.wire import dumps, format_time, loads_object
from worker.receiver.inbox_writer import InboxWriter
from worker.receiver.ingest import FRESHNESS, FUTURE_SKEW, Ingestor, Kind, Verdict
from worker.runtime.queueing import Enqueuer
from worker.store.inbox import dedupe_key

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
APP_ID, MERCHANT_NO = "UNIT_APP", "UNIT_MERCHANT"


class Touched(Exception):
    """A refusal reached for Redis, the store or the queue."""


class Tripwire:
    """Stands in for Redis, the engine and the enqueuer: any use raises ``Touched``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        raise Touched(f"{self.name}.{attribute}")


def ingestor(platform: PortalKeyPair) -> Ingestor:
    made = Ingestor(verifier=Verifier.from_values([platform.public_key], setting="test"),
                    engine=cast(Engine, Tripwire("engine")),
                    enqueuer=cast(Enqueuer, Tripwire("enqueuer")), app_ids=frozenset({APP_ID}),
                    merchant_nos=frozenset({MERCHANT_NO}), clock=lambda: NOW)
    made.writer = cast(InboxWriter, Tripwire("writer"))  # where Redis and the store are reached from
    return made


def note(*, kind: Kind = "payment", notify_time: datetime = NOW, **data: Any) -> dict[str, Any]:
    if kind == "payment":
        body = {"outTradeNo": "U1", "totalAmount": Decimal("10.00"), "currency": "USD", "status": "SUCCESS"}
    else:
        body = {"outRefundNo": "R1", "outTradeNo": "U1", "refundAmount": Decimal("1.00"), "refundCurrency": "USD",
                "status": "REFUND_SUCCESS"}
    body.update(data)
    return {"code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": APP_ID, "merchantNo": MERCHANT_NO,
            "notifyTime": format_time(notify_time), "notifyType": kind.upper(),
            "data": {k: v for k, v in body.items() if v is not None}}


def sign(platform: PortalKeyPair, raw: bytes) -> str:
    return Signer.from_value(platform.private_key, setting="test").sign(raw)


@pytest.mark.parametrize(("make", "status", "reason"), [
    (lambda p, o: (dumps(note()), None), 401, "unsigned"),
    (lambda p, o: (dumps(note()), ""), 401, "unsigned"),
    (lambda p, o: (dumps(note()), "%%%"), 401, "bad_signature"),
    (lambda p, o: (dumps(note()), sign(o, dumps(note()))), 401, "bad_signature"),
    (lambda p, o: (dumps(note()) + b" ", sign(p, dumps(note()))), 401, "bad_signature"),
    (lambda p, o: (b"{", sign(p, b"{")), 400, "malformed"),
    (lambda p, o: (dumps(note(status="PENDING")), sign(p, dumps(note(status="PENDING")))), 400, "malformed"),
    (lambda p, o: (dumps(note(outTradeNo=None)), sign(p, dumps(note(outTradeNo=None)))), 400, "malformed"),
    (lambda p, o: (dumps(note(kind="refund")), sign(p, dumps(note(kind="refund")))), 400, "malformed"),
], ids=["no sign", "empty sign", "not base64", "other key", "one byte appended", "not json", "pending",
        "no outTradeNo", "refund body"])
def test_refusals_never_touch_redis_the_store_or_the_queue(
        platform_keys: PortalKeyPair, other_keys: PortalKeyPair, make: Any, status: int, reason: str) -> None:
    """401/400 are decided from bytes, sign and clock alone."""
    body, signature = make(platform_keys, other_keys)
    assert asyncio.run(ingestor(platform_keys).ingest("payment", body, signature)) == Verdict(status, reason)


@pytest.mark.parametrize(("age", "fresh"), [
    (FRESHNESS, True), (FRESHNESS + timedelta(milliseconds=1), False),
    (-FUTURE_SKEW, True), (-FUTURE_SKEW - timedelta(milliseconds=1), False),
    (timedelta(0), True),
], ids=["48 h old", "48 h + 1 ms old", "5 min ahead", "5 min + 1 ms ahead", "now"])
def test_the_freshness_window_is_48_hours_back_and_5_minutes_ahead_inclusive(
        platform_keys: PortalKeyPair, age: timedelta, fresh: bool) -> None:
    """notifyTime exactly on either edge is fresh (it reaches the store); a millisecond past is 400 stale."""
    raw = dumps(note(notify_time=NOW - age))
    if fresh:
        with pytest.raises(Touched, match="writer"):
            asyncio.run(ingestor(platform_keys).ingest("payment", raw, sign(platform_keys, raw)))
    else:  # stale: refused (the 400 is checked over HTTP), and only the store is read, to poll the order (row 8)
        with pytest.raises(Touched, match="engine"):
            asyncio.run(ingestor(platform_keys).ingest("payment", raw, sign(platform_keys, raw)))


@pytest.mark.parametrize("field", ["appId", "merchantNo"])
def test_a_notification_for_another_merchant_is_400_not_ours(platform_keys: PortalKeyPair, field: str) -> None:
    """A verified body naming another appId or merchantNo is refused before anything is kept."""
    body = note()
    body[field] = "SOMEONE_ELSE"
    raw = dumps(body)
    verdict = asyncio.run(ingestor(platform_keys).ingest("payment", raw, sign(platform_keys, raw)))
    assert verdict == Verdict(400, "not_ours")


def test_the_dedupe_key_names_the_fact_not_the_delivery() -> None:
    """A retry re-stamped with a new notifyTime keeps its key; another status or amount is another fact."""
    first = loads_object(dumps(note()))
    retry = loads_object(dumps(note(notify_time=NOW + timedelta(minutes=30))))
    assert dedupe_key("payment", "U1", first) == dedupe_key("payment", "u1", retry)
    assert dedupe_key("payment", "U1", first) != dedupe_key("payment", "U1", loads_object(dumps(note(status="FAILED"))))
    other_amount = loads_object(dumps(note(totalAmount=Decimal("10.01"))))
    assert dedupe_key("payment", "U1", first) != dedupe_key("payment", "U1", other_amount)
    assert dedupe_key("payment", "U1", first) != dedupe_key("refund", "U1", first)


def test_the_ack_is_exactly_what_checus_expects() -> None:
    """Any 200 verdict answers {"code":"SUCCESS","msg":"Success"}, byte for byte (WIRE.md §10)."""
    assert Verdict(200, "accepted").body == b'{"code":"SUCCESS","msg":"Success"}'
    assert Verdict(200, "duplicate", 7).body == b'{"code":"SUCCESS","msg":"Success"}'


@pytest.mark.parametrize("reason", ["unsigned", "bad_signature", "malformed", "not_ours", "stale",
                                    "store_unavailable", "queue_unavailable"])
def test_a_refusal_body_is_fail_and_the_reason_only(reason: str) -> None:
    """Refusal bodies are JSON naming the reason, never the input, and never look like an ack."""
    assert json.loads(Verdict(400, reason).body) == {"code": "FAIL", "msg": reason}
