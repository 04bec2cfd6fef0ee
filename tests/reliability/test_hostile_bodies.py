"""Hostile signed bodies (reliability notes §5, goal G11): ≥ 10,000 Hypothesis-generated notifications, each
correctly signed with the platform key, posted over loopback HTTP to the real receiver (uvicorn, a private
redis-server, SQLite), then applied by the product's rq worker.

The 18 rows of the bad-input table are fixtures in ``tests/integration/test_receiver_refusals.py``; here the
content is adversarial (see ``hostile.py``) and an oracle written from the table and the receiver's documented
contract, not from its code, says what each body must get:

- row 1: a body over 64 KiB → 413 ``too_large``;
- row 5: bytes that are not one strict JSON object (a leading byte-order mark may be ignored, RFC 8259 §8.1;
  invalid UTF-8, a lone surrogate, NaN/Infinity, a duplicate
  key, an unreadable number, nesting deeper than ``MAX_DEPTH``, another top level) → 400 ``malformed``;
- row 6: a notification that does not carry what the protocol promises → 400 ``malformed``. The contract
  (WIRE.md §10/§13, the tolerant reader of ``worker/gateway/replies.py``): ``code``, ``notifyType`` (= the
  endpoint's), ``data.outTradeNo``/``outRefundNo``, a terminal ``status`` of the endpoint's kind, a currency
  code the gateway knows and an amount valid in it (a JSON number, an integer or a numeric string; finite,
  ≥ 0, no more decimals than the currency has, at most 18 digits; never rounded) are required; every text
  field read is a string or a number (never a boolean, list or object) within its length; an empty string
  counts as absent; ``paymentDetails`` is a list of objects when present; unknown fields are ignored;
- row 7: ``appId``/``merchantNo`` present and not ours → 400 ``not_ours`` (``notifyType`` ≠ endpoint is row 6's
  ``malformed``, as the fixtures specify);
- row 8: a readable ``notifyTime`` older than 48 h or more than 5 min ahead → 400 ``stale`` (an unreadable or
  absent one is not a freshness claim and is not judged);
- otherwise 200 with the ack body: rows 9-15 (duplicates, unknown orders or refunds, amount or currency
  mismatches, contradictions) are acknowledged and judged later by the worker.

Per example: the reply equals the oracle's, never a 5xx. Over the run: no unhandled exception or traceback in
the receiver's logs; inbox rows = distinct accepted facts; Redis holds only the expected keys. Then the
applier runs: no job fails, no inbox row ends as an error, and no order or refund moves except as the table
allows (a fact about an unknown order stays deferred; a mismatch is an anomaly, not a change).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
import simplejson
import sqlalchemy as sa
from babel.numbers import get_currency_precision, list_currencies
from hypothesis import HealthCheck, given, settings
from rq.registry import FailedJobRegistry
from structlog.testing import capture_logs

from tests.integration.test_receiver_harness import ACK, APP_ID, MERCHANT_NO, PAYMENT, Rig, open_rig
from worker.devtools.demo.redis_server import RedisServer
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import parse_time
from worker.runtime.queueing import make_queue
from worker.store.schema import anomalies, orders, payment_tokens, refunds, transitions

from .conftest import note
from .hostile import KNOWN_ORDERS, MAX_BODY, Hostile, hostile_bodies

EXAMPLES = int(os.environ.get("CHECUS_HOSTILE_EXAMPLES", "").strip() or 10_000)
MAX_DEPTH = 64  # a notification nests 6 levels; the receiver refuses anything past this bound
FRESHNESS, FUTURE = timedelta(hours=48), timedelta(minutes=5)
GATEWAY_EXPONENTS = {**dict.fromkeys(("IDR", "KRW", "JPY", "TWD", "CLP", "COP", "PKR", "VND", "ISK", "PYG"), 0),
                     **dict.fromkeys(("BHD", "KWD", "JOD", "OMR", "TND"), 2)}  # WIRE.md §22
ENVELOPE = {"code": (True, 64), "msg": (False, 512), "appId": (False, 64), "merchantNo": (False, 32),
            "notifyType": (True, 32)}
PAYMENT_TEXT = {"outTradeNo": (True, 64), "tradeToken": (False, 64), "country": (False, 2),
                "resultCode": (False, 1024), "resultMsg": (False, 1024), "reference": (False, 512)}
REFUND_TEXT = {"outRefundNo": (True, 64), "refundTradeNo": (False, 64), "outTradeNo": (False, 64),
               "resultMsg": (False, 1024)}
ORDER_FINAL = {"SUCCESS", "FAILED", "CLOSED"}
REFUND_FINAL = {"REFUND_SUCCESS", "REFUND_FAILED"}


class Refused(Exception):
    """The oracle's verdict: the body is refused with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Expected:
    status: int
    reason: str
    kind: str = ""
    fact: str = ""  # what makes two notifications one fact: their kind and their ``data``, as sent
    ref: str = ""
    status_reported: str = ""
    amount: Decimal | None = None
    currency: str = ""
    order_ref: str = ""  # a refund's outTradeNo
    identity_ok: bool = True
    notify_time: datetime | None = None


# -- the oracle -------------------------------------------------------------------------------------------


def strict_json(raw: bytes) -> Any:
    """Row 5: one JSON text, UTF-8, no duplicate keys, no NaN/Infinity, Unicode strings only (no lone
    surrogate, no NUL: neither can be stored), bounded depth."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise Refused("malformed")
        return dict(pairs)

    def constant(_name: str) -> Any:
        raise Refused("malformed")

    try:
        value = json.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), object_pairs_hook=unique,
                           parse_constant=constant, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError, RecursionError, ArithmeticError):
        raise Refused("malformed") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str) and re.search("[\x00\ud800-\udfff]", item):
            raise Refused("malformed")
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise Refused("malformed")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    if not isinstance(value, dict):
        raise Refused("malformed")
    return value


def text(d: dict[str, Any], key: str, required: bool, limit: int) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        if required:
            raise Refused("malformed")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal) or len(str(value)) > limit:
        raise Refused("malformed")
    return str(value)


def texts(d: dict[str, Any], spec: dict[str, tuple[bool, int]]) -> dict[str, str | None]:
    return {key: text(d, key, required, limit) for key, (required, limit) in spec.items()}


def exponent_of(currency: str | None) -> int:
    if currency is None or not re.fullmatch("[A-Z]{3}", currency):
        raise Refused("malformed")
    if currency in GATEWAY_EXPONENTS:
        return GATEWAY_EXPONENTS[currency]
    if currency not in list_currencies():
        raise Refused("malformed")
    return int(get_currency_precision(currency))


def amount_of(d: dict[str, Any], keys: tuple[str, str], currency: str) -> Decimal:
    """A finite amount ≥ 0 with at most the currency's decimals and 18 digits: refused, never rounded."""
    exponent = exponent_of(currency)
    value = next((d[k] for k in keys if d.get(k) is not None), None)
    if isinstance(value, str) and 0 < len(value.strip()) <= 40:
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise Refused("malformed") from None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Refused("malformed")
    number = Decimal(value)
    if not number.is_finite() or number < 0:
        raise Refused("malformed")
    _sign, digits, exp = number.as_tuple()
    assert isinstance(exp, int)
    significant = "".join(map(str, digits)).lstrip("0")
    stripped = significant.rstrip("0")
    exp += len(significant) - len(stripped)
    if stripped and (-exp > exponent or len(stripped) + max(exp, 0) > 18):
        raise Refused("malformed")
    return number


def sub(d: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional nested object: anything else reads as empty."""
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def details_ok(data: dict[str, Any]) -> None:
    details = data.get("paymentDetails") or []
    if not isinstance(details, list):
        raise Refused("malformed")
    for detail in details:
        if not isinstance(detail, dict):
            raise Refused("malformed")
        card = sub(detail, "cardInfo")
        three_ds = sub(card, "threeDSResult")
        text(detail, "paymentMethodType", False, 1024)
        if text(detail, "paymentTokenID", False, 64) is None:
            text(card, "paymentTokenID", False, 64)
        text(card, "cardOrg", False, 1024)
        text(card, "cardIdentifierNo", False, 32)
        text(three_ds, "authenticationStatus", False, 1024)


def judge(path: str, raw: bytes, at: datetime) -> Expected:
    """What the receiver must answer to ``raw``, correctly signed, posted to ``path`` at ``at``."""
    if len(raw) > MAX_BODY:
        return Expected(413, "too_large")
    try:
        return _accepted(path, strict_json(raw), at)
    except Refused as refusal:
        return Expected(400, refusal.reason)


def _accepted(path: str, body: dict[str, Any], at: datetime) -> Expected:
    kind = "payment" if path == PAYMENT else "refund"
    header = texts(body, ENVELOPE)
    if header["notifyType"] != kind.upper():
        raise Refused("malformed")
    data: dict[str, Any] | Any = body.get("data")
    if not isinstance(data, dict):
        raise Refused("malformed")
    fields: dict[str, str | None]
    if kind == "payment":
        fields, currency = texts(data, PAYMENT_TEXT), text(data, "currency", True, 3)
        amount = amount_of(data, ("totalAmount", "amount"), currency or "")
        statuses, ref, order_ref = ORDER_FINAL, fields["outTradeNo"], fields["outTradeNo"]
        details_ok(data)
    else:
        fields = texts(data, REFUND_TEXT)
        currency = text(data, "refundCurrency" if data.get("refundCurrency") else "currency", True, 3)
        amount = amount_of(data, ("refundAmount", "totalAmount"), currency or "")
        statuses, ref, order_ref = REFUND_FINAL, fields["outRefundNo"], fields["outTradeNo"]
    status = data.get("status")
    if not isinstance(status, str) or status not in statuses:
        raise Refused("malformed")
    if header["appId"] not in (None, APP_ID) or header["merchantNo"] not in (None, MERCHANT_NO):
        raise Refused("not_ours")
    when = parse_time(body.get("notifyTime"))  # RFC 3339 with an offset, else no claim about freshness
    if when is not None and not at - FRESHNESS <= when <= at + FUTURE:
        raise Refused("stale")
    fact = kind + ":" + simplejson.dumps(data, sort_keys=True, separators=(",", ":"), use_decimal=True)
    assert ref is not None and currency is not None
    return Expected(200, "accepted", kind=kind, fact=fact, ref=ref, status_reported=status, amount=amount,
                    currency=currency, order_ref=order_ref or "", notify_time=when)


# -- the run ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    rig: Rig
    replies: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    accepted: list[Expected] = field(default_factory=list)
    examples: int = 0

    def send(self, body: Hostile) -> None:
        self.examples += 1
        sign = self.rig.signer.sign(body.raw)
        expected = judge(body.path, body.raw, datetime.now(UTC))
        response = self.rig.post(body.raw, sign=sign, path=body.path)
        self.replies[f"{response.status_code} {expected.reason}"] += 1
        self.labels[body.label.split("+")[0]] += 1
        assert response.status_code < 500, f"{response.status_code} for a {body.label} body"
        want = ACK if expected.status == 200 else b'{"code":"FAIL","msg":"' + expected.reason.encode() + b'"}'
        assert (response.status_code, response.content) == (expected.status, want), \
            f"{body.label}: got {response.status_code} {response.content[:60]!r}, the table says {expected.status}"
        if expected.status == 200:
            self.accepted.append(expected)


@pytest.fixture(scope="module")
def hostile_rig(tmp_path_factory: pytest.TempPathFactory, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("hostile")
    redis = RedisServer(root / "redis").start()
    try:
        with open_rig(redis_url=redis.url, database_url=f"sqlite:///{root / 'store.db'}", platform=platform_keys) as r:
            for no, (amount, currency, save_card) in KNOWN_ORDERS.items():
                r.create_order(no, amount, currency, save_card=save_card)
            yield r
    finally:
        redis.stop()


def traceback_text(event: MutableMapping[str, Any]) -> str:
    exc = event.get("exc_info")
    if isinstance(exc, BaseException):
        return "".join(traceback.format_exception(exc))
    return ""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hostile_signed_bodies_get_the_specified_reply_and_change_only_what_the_table_allows(
        hostile_rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """≥ 10,000 signed adversarial bodies: each gets the oracle's reply, never a 5xx; nothing is kept but the
    accepted facts; applying them raises nothing and changes orders and refunds only as the table allows."""
    rig, run = hostile_rig, Run(hostile_rig)
    before = rig.snapshot()
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=os.environ.get("CI") == "true",
              suppress_health_check=list(HealthCheck))
    @given(hostile_bodies())
    def each(body: Hostile) -> None:
        run.send(body)

    with capture_logs() as events:
        each()
        sending = time.monotonic() - started
        received = len(events)
        check_receiving(rig, run, before, events[:received], caplog)
        set_aside_hint_polls(rig)
        applied_at = time.monotonic()
        rig.drain()
        applying = time.monotonic() - applied_at
        check_applying(rig, run, events[received:], caplog)
    facts = len({e.fact for e in run.accepted})
    note(f"hostile bodies: {run.examples} signed examples in {sending:.1f} s ({run.examples / sending:.0f}/s); "
         f"replies {dict(sorted(run.replies.items()))}; {len(run.accepted)} accepted = {facts} distinct facts; "
         f"applied in {applying:.1f} s")
    note(f"hostile bodies: first corruption {dict(run.labels.most_common(12))}")
    assert run.examples >= EXAMPLES


def check_receiving(rig: Rig, run: Run, before: dict[str, Any], events: list[MutableMapping[str, Any]],
                    caplog: pytest.LogCaptureFixture) -> None:
    """No exception anywhere; SQL holds exactly the accepted facts; Redis only the keys they explain."""
    failures = [e for e in events if e.get("log_level") in ("error", "critical") or traceback_text(e)]
    assert failures == [], f"{len(failures)} error events, first: {failures[0].get('event')}"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], f"{len(errors)} error records, first: {errors[0].name} {errors[0].getMessage()[:80]}"
    after = rig.snapshot()
    facts = {e.fact for e in run.accepted}
    assert after["inbox"] == before["inbox"] + len(facts)
    assert {k: after[k] for k in ("transitions", "anomalies", "outbox", "payment_tokens", "orders")} == \
        {k: before[k] for k in ("transitions", "anomalies", "outbox", "payment_tokens", "orders")}
    kinds = Counter(classify(key.decode()) for key in rig.redis.scan_iter("*"))
    assert "unexpected" not in kinds, [k for k in rig.redis.scan_iter("*") if classify(k.decode()) == "unexpected"][:5]
    assert kinds["seen"] == len(facts)
    # row 8: a stale notification prompts one poll of its order, if known and open: at most one per order
    assert kinds["poll"] <= (len(KNOWN_ORDERS) if run.replies.get("400 stale") else 0)


def classify(key: str) -> str:
    if key.startswith("checus:seen:"):
        return "seen"
    if re.fullmatch(r"rq:job:poll-(order|refund)-\d+", key):
        return "poll"
    if re.fullmatch(r"rq:job:apply-shard-\d(-[0-9a-f]+)?", key) or key.startswith("rq:queue"):
        return "rq"
    if key.startswith(("checus:wake:", "rq:queues", "rq:scheduled:", "rq:registry:")):
        return "rq"
    return "unexpected"


def set_aside_hint_polls(rig: Rig) -> None:
    """Row 8's hint polls ask the gateway, which this rig has not got (the receiver holds no merchant key):
    they were counted above; only the notifications are applied here."""
    queue = make_queue(rig.rt.redis)
    for job_id in queue.job_ids:
        if job_id.startswith("poll-"):
            queue.remove(job_id)
            rig.rt.redis.delete(f"rq:job:{job_id}")


def check_applying(rig: Rig, run: Run, events: list[MutableMapping[str, Any]],
                   caplog: pytest.LogCaptureFixture) -> None:
    failed = FailedJobRegistry(queue=make_queue(rig.rt.redis))
    assert failed.get_job_ids() == []
    broken = [e.get("event") for e in events if e.get("log_level") in ("error", "critical")]
    assert broken == []
    assert [r.name for r in caplog.records if r.levelno >= logging.ERROR] == []
    outcomes = Counter(str(r.outcome) for r in rig.inbox_rows())
    assert not {"error", "malformed", "forged", "None"} & set(outcomes), outcomes
    expected_states = expected_order_states(run)
    with rig.rt.engine.connect() as conn:
        order_rows = list(conn.execute(sa.select(orders.c.id, orders.c.out_trade_no, orders.c.state)))
        states = {r.out_trade_no: r.state for r in order_rows}
        anomaly_refs = list(conn.execute(sa.select(anomalies.c.ref, anomalies.c.kind)))
        refund_rows = list(conn.execute(sa.select(refunds)))
        edges = list(conn.execute(sa.select(transitions.c.entity, transitions.c.from_state, transitions.c.to_state)))
        tokens = conn.execute(sa.select(sa.func.count()).select_from(payment_tokens)).scalar_one()
    assert states == expected_states
    # anomalies name a known order, or a refund reported for a known order that it cannot take (row 14)
    reported = {e.ref for e in run.accepted if e.kind == "refund" and e.order_ref.upper() in KNOWN_ORDERS}
    assert all(ref.upper() in KNOWN_ORDERS or ref in reported for ref, _kind in anomaly_refs), anomaly_refs[:5]
    check_refunds(run, states, {r.id: r.out_trade_no for r in order_rows}, refund_rows)
    note(f"hostile bodies applied: inbox outcomes {dict(outcomes)}; orders {states}; {len(refund_rows)} refunds "
         f"adopted; {len(anomaly_refs)} anomalies {dict(Counter(k for _r, k in anomaly_refs))}; "
         f"{len(edges)} audit rows; {tokens} tokens")
    assert tokens <= sum(1 for no, (_a, _c, save) in KNOWN_ORDERS.items() if save and states[no] == "SUCCESS")


def expected_order_states(run: Run) -> dict[str, str]:
    """A known order takes the status of the first accepted payment fact that matches it in amount and currency
    (the rest are duplicates or contradictions, confirmed by a query, never applied); nothing else moves it."""
    states = {no: "CREATED" for no in KNOWN_ORDERS}
    for fact in run.accepted:
        order = KNOWN_ORDERS.get(fact.ref.upper())
        if fact.kind != "payment" or order is None or states[fact.ref.upper()] != "CREATED":
            continue
        amount, currency, _save = order
        if fact.currency == currency and fact.amount == Decimal(amount):
            states[fact.ref.upper()] = fact.status_reported
    return states


def check_refunds(run: Run, states: dict[str, str], numbers: dict[int, str], rows: list[Any]) -> None:
    """Row 14: a refund Checus reports that we never asked for is recorded only for a known paid order, in its
    currency, within what is left to refund, and only from an accepted refund fact."""
    reported = {e.ref for e in run.accepted if e.kind == "refund"}
    by_order: Counter[str] = Counter()
    for row in rows:
        assert row.out_refund_no in reported
        assert row.state in REFUND_FINAL | {"REFUND_PENDING"}
        no = numbers[row.order_id]
        assert states[no] == "SUCCESS" and row.currency == KNOWN_ORDERS[no][1]
        if row.state != "REFUND_FAILED":
            by_order[no] += row.amount_minor
    for no, minor in by_order.items():
        amount, currency, _save = KNOWN_ORDERS[no]
        assert minor <= Decimal(amount).scaleb(2 if currency != "JPY" else 0)

