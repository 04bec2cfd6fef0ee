"""Bad input at the receiver (reliability notes §5 rows 3-8), one fixture per case, over loopback HTTP.

Each case is sent to the real receiver and must get the specified reply (401 for anything
whose signature does not verify against the local trust list, 400 for a verified body that is
not a notification we can accept) and change nothing: no inbox row, no rq job, no order
touched. One receiver serves the whole module: a refusal leaves nothing behind to clean up.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.test_receiver_harness import (
    PAYMENT,
    REFUND,
    Rig,
    now,
    open_rig,
    payment_note,
    refund_note,
    signer_of,
    without,
)
from worker.devtools.demo.redis_server import RedisServer
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import dumps


@pytest.fixture(scope="module")
def rig(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory,
        platform_keys: PortalKeyPair) -> Iterator[Rig]:
    store = tmp_path_factory.mktemp("refusals") / "store.db"
    with open_rig(redis_url=redis_server.url, database_url=f"sqlite:///{store}", platform=platform_keys) as r:
        r.create_order("RX_ORDER_1")  # the notifications below name an order that exists
        yield r


Build = Callable[[Rig, PortalKeyPair], tuple[str, bytes, str | None]]  # (rig, a stranger's keys) → path, body, sign


@dataclass(frozen=True, slots=True)
class Case:
    """One bad request: what to send (path, body, sign) given the rig, and the reply it must get."""

    build: Build
    status: int
    reason: str


def signed(note: dict[str, Any] | Callable[[], dict[str, Any]], path: str = PAYMENT) -> Build:
    """A genuine signature over ``note`` (a callable is built when sent: for notes that depend on the clock)."""
    def build(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
        raw, sign = rig.signed(note() if callable(note) else note)
        return path, raw, sign

    return build


def signed_bytes(raw: bytes) -> Build:
    def build(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
        return PAYMENT, raw, rig.signer.sign(raw)

    return build


def with_sign(make: Callable[[Rig, bytes], str | None]) -> Build:
    def build(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
        raw = dumps(payment_note())
        return PAYMENT, raw, make(rig, raw)

    return build


def tampered(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
    raw, sign = rig.signed(payment_note())
    return PAYMENT, raw.replace(b'"totalAmount":100.00', b'"totalAmount":1.00'), sign


def reserialized(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
    """Same JSON value, different bytes: the signature is over bytes, so this is a forgery too."""
    raw, sign = rig.signed(payment_note())
    return PAYMENT, json.dumps(json.loads(raw), indent=1).encode(), sign


def other_key(rig: Rig, other: PortalKeyPair) -> tuple[str, bytes, str | None]:
    raw = dumps(payment_note())
    return PAYMENT, raw, signer_of(other).sign(raw)


def signature_of_another_body(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
    _raw, sign = rig.signed(payment_note(status="FAILED"))
    return PAYMENT, dumps(payment_note()), sign


def unpadded(rig: Rig, raw: bytes) -> str:
    return rig.signer.sign(raw).rstrip("=")


def spaced(rig: Rig, raw: bytes) -> str:
    sign = rig.signer.sign(raw)
    return f"{sign[:100]} {sign[100:]}"


def urlsafe(rig: Rig, _other: PortalKeyPair) -> tuple[str, bytes, str | None]:
    """The signature in the URL-safe alphabet (a note is chosen whose signature spells differently)."""
    for n in range(1000):
        raw, sign = rig.signed(payment_note(amount=Decimal(100 + n)))
        if "+" in sign or "/" in sign:
            return PAYMENT, raw, base64.urlsafe_b64encode(base64.b64decode(sign)).decode()
    raise AssertionError("no signature with + or / in 1000 notes")


def short(rig: Rig, raw: bytes) -> str:
    return base64.b64encode(base64.b64decode(rig.signer.sign(raw))[:-1]).decode()


def long(rig: Rig, raw: bytes) -> str:
    return base64.b64encode(base64.b64decode(rig.signer.sign(raw)) + b"\0").decode()


def aged(age: timedelta, make: Callable[..., dict[str, Any]] = payment_note) -> Callable[[], dict[str, Any]]:
    return lambda: make(notify_time=now() - age)


CASES: dict[str, Case] = {
    # row 3: sign missing, not Base64, wrong length
    "sign missing": Case(with_sign(lambda _r, _b: None), 401, "unsigned"),
    "sign empty": Case(with_sign(lambda _r, _b: ""), 401, "unsigned"),
    "sign not base64": Case(with_sign(lambda _r, _b: "!!not*base64!!"), 401, "bad_signature"),
    "sign unpadded": Case(with_sign(unpadded), 401, "bad_signature"),
    "sign url-safe alphabet": Case(urlsafe, 401, "bad_signature"),
    "sign with whitespace inside": Case(with_sign(spaced), 401, "bad_signature"),
    "sign one byte short": Case(with_sign(short), 401, "bad_signature"),
    "sign one byte long": Case(with_sign(long), 401, "bad_signature"),
    # row 4: signature invalid
    "body tampered after signing": Case(tampered, 401, "bad_signature"),
    "body re-serialized after signing": Case(reserialized, 401, "bad_signature"),
    "signed by another key": Case(other_key, 401, "bad_signature"),
    "signature of another body": Case(signature_of_another_body, 401, "bad_signature"),
    # row 5: signed, JSON unparseable
    "signed plain text": Case(signed_bytes(b"SUCCESS"), 400, "malformed"),
    "signed truncated json": Case(signed_bytes(dumps(payment_note())[:-1]), 400, "malformed"),
    "signed json array": Case(signed_bytes(b"[]"), 400, "malformed"),
    "signed invalid utf-8": Case(signed_bytes(b'{"code":"\xff"}'), 400, "malformed"),
    "signed duplicate keys": Case(signed_bytes(dumps(payment_note())[:-1] + b',"notifyType":"REFUND"}'), 400,
                                  "malformed"),
    "signed NaN amount": Case(signed_bytes(dumps(payment_note(amount=Decimal(1))).replace(
        b'"totalAmount":1', b'"totalAmount":NaN')), 400, "malformed"),
    # row 6: signed, schema invalid
    "outTradeNo missing": Case(signed(without(payment_note(), "data.outTradeNo")), 400, "malformed"),
    "status missing": Case(signed(without(payment_note(), "data.status")), 400, "malformed"),
    "data missing": Case(signed(without(payment_note(), "data")), 400, "malformed"),
    "amount missing": Case(signed(without(payment_note(), "data.totalAmount")), 400, "malformed"),
    "float amount (more decimals than USD has)": Case(signed(payment_note(amount=Decimal("100.001"))), 400,
                                                      "malformed"),
    "float artefact amount": Case(signed(payment_note(amount=Decimal("100.00000000000001"))), 400, "malformed"),
    "garbage amount": Case(signed(payment_note(amount="one hundred")), 400, "malformed"),
    "boolean amount": Case(signed(payment_note(amount=True)), 400, "malformed"),
    "negative amount": Case(signed(payment_note(amount=Decimal("-100.00"))), 400, "malformed"),
    "huge amount": Case(signed(payment_note(amount=Decimal("1E+999999"))), 400, "malformed"),
    "unknown currency": Case(signed(payment_note(currency="XXY")), 400, "malformed"),
    "status PENDING in a payment notification": Case(signed(payment_note(status="PENDING")), 400, "malformed"),
    "unknown status": Case(signed(payment_note(status="PAID")), 400, "malformed"),
    "status REFUND_PENDING in a refund notification": Case(signed(refund_note(status="REFUND_PENDING"), REFUND),
                                                           400, "malformed"),
    # row 7: signed, not ours or not for this endpoint
    "appId not ours": Case(signed(payment_note(app_id="SOMEONE_ELSE")), 400, "not_ours"),
    "merchantNo not ours": Case(signed(payment_note(merchant_no="SOMEONE_ELSE")), 400, "not_ours"),
    "refund body on the payment path": Case(signed(refund_note(), PAYMENT), 400, "malformed"),
    "payment body on the refund path": Case(signed(payment_note(), REFUND), 400, "malformed"),
    "notifyType REFUND with payment data": Case(signed(payment_note(notify_type="REFUND")), 400, "malformed"),
    # row 8: signed, outside the freshness window
    "notifyTime 48 h 1 min old": Case(signed(aged(timedelta(hours=48, minutes=1))), 400, "stale"),
    "notifyTime 6 min in the future": Case(signed(aged(-timedelta(minutes=6))), 400, "stale"),
    "refund notifyTime 48 h 1 min old": Case(signed(aged(timedelta(hours=48, minutes=1), refund_note), REFUND), 400,
                                             "stale"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_its_reply_and_changes_nothing(rig: Rig, other_keys: PortalKeyPair, name: str) -> None:
    """Each §5 row 3-8 fixture gets its 401/400 with a FAIL body; no inbox row, no job, no order change."""
    case = CASES[name]
    path, body, sign = case.build(rig, other_keys)
    before = rig.snapshot()
    response = rig.post(body, sign=sign, path=path)
    assert (response.status_code, response.json()) == (case.status, {"code": "FAIL", "msg": case.reason})
    after = rig.snapshot()
    # §5 row 8: a stale but signed notification changes nothing, yet prompts a poll of a known open order.
    hinted = [job for job in after["rq_jobs"] if job.startswith("rq:job:poll-") and job not in before["rq_jobs"]]
    polled = "rq:job:poll-order-1" in after["rq_jobs"]
    assert polled if case.reason == "stale" and path.endswith("payment") else hinted == []
    assert {**after, "queued": after["queued"] - len(hinted),
            "rq_jobs": [job for job in after["rq_jobs"] if job not in hinted]} == before
    assert before["orders"] == [("RX_ORDER_1", "CREATED", 1)]


def test_the_control_notification_is_accepted(rig: Rig) -> None:
    """The note every case above corrupts is itself acceptable (so each refusal is about its one defect)."""
    assert rig.deliver(payment_note(notify_time=now() - timedelta(hours=47))).status_code == 200
    assert len(rig.inbox_rows()) == 1
