"""Signature fuzz (target 5): 200 valid signed notifications x 100 mutations, all refused, nothing changed.

The 200 bodies vary as Checus's do: payments SUCCESS, FAILED and CLOSED with and without a
saved card token, refunds, several currencies and amounts, orders the store holds and orders
it does not. ``mutations.py`` turns each into 100 requests that must fail verification (body
bytes changed under the genuine ``sign``, the header dropped, emptied or repeated, Base64
re-spelled, other keys, other bodies' signatures). All 20,000 go over keep-alive HTTP on
loopback to the product's receiver (uvicorn, its own redis-server, a fresh SQLite store):

- every one is refused with the reply its class specifies: 401 ``unsigned`` without a value,
  401 ``bad_signature`` for any other value that does not verify, and 400 from the HTTP
  parser for a folded header line (the only way a newline fits into a header); no 2xx, no 5xx;
- no rq job, no inbox row, no change to any SQL row or to any Redis key or value;
- no error or traceback in the logs, and one ``notification.rejected`` event per refusal.

Then the control: the 200 unmutated requests are all acknowledged, and the same detectors
see their inbox rows, jobs and Redis keys appear. The seed is printed in the terminal summary;
``CHECUS_FUZZ_SEED`` replays the plan (keys are generated per run, so signatures differ).
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from redis import Redis
from structlog.testing import capture_logs

from tests.integration.test_receiver_harness import (
    ACK,
    PAYMENT,
    REFUND,
    Rig,
    now,
    open_rig,
    payment_note,
    refund_note,
    signer_of,
)
from worker.devtools.demo.redis_server import RedisServer
from worker.gateway.money import currency_exponent
from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair, load_private_key
from worker.runtime.queueing import make_queue
from worker.store.db import read
from worker.store.schema import metadata

from .conftest import note
from .mutations import CATALOGUE, HTTP_PARSER, PER_SAMPLE, Keys, Mutant, Sample, fuzz_seed, mutate
from .rq_registries import REGISTRIES

SAMPLES = 200
THREADS = 4
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "IDR", "KWD", "BRL", "SAR")
MESSAGES = ("", "Success.", "Paiement réussi", "支付成功", "OK")
PARSER_REFUSAL = b"Invalid HTTP request received."


@pytest.fixture
def fuzz_rig(own_redis: RedisServer, artifacts: Path, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    with open_rig(redis_url=own_redis.url, database_url=f"sqlite:///{artifacts / 'store.db'}",
                  platform=platform_keys) as rig:
        yield rig


# -- the valid bodies ---------------------------------------------------------------------------------------


def amount_in(currency: str, rng: random.Random, ceiling: int = 500_000) -> Decimal:
    exponent = currency_exponent(currency)
    return Decimal(rng.randint(1, ceiling)).scaleb(-exponent) if exponent else Decimal(rng.randint(1, ceiling))


def build_samples(rig: Rig, rng: random.Random, count: int) -> list[Sample]:
    """``count`` notifications as Checus signs them; about half name an order stored beforehand."""
    samples = []
    for i in range(count):
        known, currency = rng.random() < 0.5, rng.choice(CURRENCIES)
        amount, order_no = amount_in(currency, rng), f"FZ_ORDER_{i:03d}"
        sent = now() - timedelta(seconds=rng.randrange(-60, 40 * 3600))  # inside the freshness window
        if rng.random() < 0.7:
            status, token = rng.choice(["SUCCESS", "FAILED", "CLOSED"]), rng.random() < 0.4
            body = payment_note(order_no, status=status, amount=amount, currency=currency, notify_time=sent,
                                token=f"PMTOKEN{rng.randrange(10**20):020d}" if token else None)
            body["data"]["reference"] = f"INV/{i}/{rng.randrange(10**6)}"  # a "/" to escape as "\/"
            path, label = PAYMENT, f"payment {status}{' token' if token else ''}"
        else:
            status = rng.choice(["REFUND_SUCCESS", "REFUND_FAILED"])
            body = refund_note(f"FZ_REFUND_{i:03d}", out_trade_no=order_no, status=status, currency=currency,
                               amount=min(amount, amount_in(currency, rng, 50_000)), notify_time=sent)
            path, label, token = REFUND, f"refund {status}", False
        body["msg"] = f"{rng.choice(MESSAGES)} /{i}".strip()
        if known:
            rig.create_order(order_no, str(amount), currency, save_card=token)
        raw, sign = rig.signed(body)
        samples.append(Sample(f"{label} {currency} {'known' if known else 'unknown'} order", path, raw, sign))
    return samples


def fuzz_keys(platform: PortalKeyPair, other: PortalKeyPair) -> Keys:
    return Keys(platform=load_private_key(platform.private_key, setting="platform test key"),
                strangers=[signer_of(other), signer_of(generate_portal_key_pair())],
                big_stranger=signer_of(generate_portal_key_pair(3072)))


# -- sending: raw header lines over keep-alive connections ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    signs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str  # the receiver's ``msg``, "ack", "http" (the HTTP parser's refusal) or what went wrong
    seconds: float


class Sender:
    """Sends requests from a few threads, each on one keep-alive connection (reopened only when the
    server closes it). ``http.client`` is used because it sends header lines exactly as given:
    repeated, empty, or folded."""

    def __init__(self, base_url: str, threads: int = THREADS) -> None:
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.threads = host, int(port), threads
        self.connections = 0
        self._lock = threading.Lock()

    def send_all(self, requests: Sequence[Request]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(requests)
        workers = [threading.Thread(target=self._run, args=(requests, replies, t), name=f"fuzz-{t}")
                   for t in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert all(r is not None for r in replies), "a sender thread died"
        return [r for r in replies if r is not None]

    def _run(self, requests: Sequence[Request], replies: list[Reply | None], offset: int) -> None:
        conn = self._connect()
        for i in range(offset, len(requests), self.threads):
            began = time.perf_counter()
            try:
                status, body = self._exchange(conn, requests[i])
                replies[i] = Reply(status, reason_of(status, body), time.perf_counter() - began)
            except (OSError, http.client.HTTPException) as exc:
                replies[i] = Reply(0, type(exc).__name__, time.perf_counter() - began)
                conn.close()
            if conn.sock is None:
                conn = self._connect()
        conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        with self._lock:
            self.connections += 1
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.connect()
        return conn

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, request: Request) -> tuple[int, bytes]:
        conn.putrequest("POST", request.path, skip_accept_encoding=True)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(request.body)))
        for sign in request.signs:
            conn.putheader("sign", sign)
        conn.endheaders(request.body)
        response = conn.getresponse()
        return response.status, response.read()


def reason_of(status: int, body: bytes) -> str:
    if body == ACK:
        return "ack"
    if body == PARSER_REFUSAL:
        return HTTP_PARSER[1]
    try:
        return str(json.loads(body)["msg"])
    except (ValueError, KeyError, TypeError):
        return f"unexpected body ({status})"


# -- what a request could have changed -----------------------------------------------------------------------


def store_rows(rig: Rig) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    with read(rig.rt.engine) as conn:
        return {table.name: [tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))]
                for table in metadata.sorted_tables}


def redis_values(client: Redis) -> dict[bytes, tuple[Any, Any]]:
    """Every key with its type and serialized value."""
    return {key: (client.type(key), client.dump(key)) for key in client.scan_iter(count=1000)}


def rq_counts(rig: Rig) -> dict[str, int]:
    queue = make_queue(rig.rt.redis)
    counts = {name: int(registry(queue=queue).count) for name, registry in REGISTRIES.items()}
    return {"queued": int(queue.count), **counts, "job_keys": len(rig.jobs())}


def changed(before: dict[Any, Any], after: dict[Any, Any]) -> list[str]:
    """The names of entries that differ (never their values: they hold bodies and signatures)."""
    return sorted(str(name) for name in before.keys() | after.keys() if before.get(name) != after.get(name))


# -- the test ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_mutated_signature_is_refused_and_changes_nothing(
        fuzz_rig: Rig, own_redis: RedisServer, platform_keys: PortalKeyPair, other_keys: PortalKeyPair,
        artifacts: Path, caplog: pytest.LogCaptureFixture) -> None:
    """20,000 mutants of 200 signed notifications: each gets its 401/400; no job, no row, no key changes;
    then the 200 originals are all acknowledged."""
    rig, seed = fuzz_rig, fuzz_seed()
    context = f"seed={seed} (replay: CHECUS_FUZZ_SEED={seed})"
    rng = random.Random(seed)  # noqa: S311 - a replayable plan, not a secret
    began = time.monotonic()
    samples = build_samples(rig, rng, SAMPLES)
    mutants = mutate(samples, fuzz_keys(platform_keys, other_keys), rng)
    prepared = time.monotonic() - began
    assert len(mutants) == SAMPLES * PER_SAMPLE, context

    client = Redis.from_url(own_redis.url)
    rows, keys, jobs = store_rows(rig), redis_values(client), rq_counts(rig)
    sender, commands = Sender(rig.served.base_url), len(rig.redis.commands)
    caplog.set_level(logging.WARNING)
    with capture_logs() as events:
        fuzz_began = time.monotonic()
        replies = sender.send_all([Request(m.path, m.body, m.signs) for m in mutants])
        elapsed = time.monotonic() - fuzz_began
    receiver_commands = len(rig.redis.commands) - commands

    figures = fuzz_figures(mutants, replies, elapsed, sender.connections, prepared, receiver_commands)
    figures["seed"] = seed
    wrong = [(m.kind, m.sample, r.status, r.reason) for m, r in zip(mutants, replies, strict=True)
             if (r.status, r.reason) != m.expect]
    figures["wrong_replies"] = len(wrong)
    try:
        assert not wrong, f"{len(wrong)} mutants not refused as specified, first {wrong[:10]}; {context}"
        assert rq_counts(rig) == jobs == dict.fromkeys(jobs, 0), context
        assert changed(keys, redis_values(client)) == [], f"Redis keys changed; {context}"
        assert changed(rows, store_rows(rig)) == [], f"SQL tables changed; {context}"
        assert rows["inbox"] == [], context
        assert_quiet_logs(events, caplog.records, mutants, context)
        control = sender.send_all([Request(s.path, s.body, (s.sign,)) for s in samples])
        figures["control"] = dict(Counter(f"{r.status} {r.reason}" for r in control))
        assert [(r.status, r.reason) for r in control] == [(200, "ack")] * SAMPLES, context
        assert len(store_rows(rig)["inbox"]) == SAMPLES, context
        assert rq_counts(rig)["job_keys"] > 0 and changed(keys, redis_values(client)), context
    finally:
        (artifacts / "fuzz.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
        note(f"signature fuzz {context}: {figures['requests']} requests ({SAMPLES} bodies x {PER_SAMPLE}) in "
             f"{figures['seconds']} s = {figures['requests_per_second']} req/s over {figures['connections']} "
             f"keep-alive connections ({THREADS} threads), latency ms p50/p99/max {figures['latency_ms']}; "
             f"replies {figures['replies']}; by family {figures['by_family']}; wrong {len(wrong)}; "
             f"receiver Redis commands {receiver_commands}; control {figures.get('control')}; "
             f"prepared in {figures['prepare_seconds']} s; per class in {artifacts / 'fuzz.json'}")


def fuzz_figures(mutants: Sequence[Mutant], replies: Sequence[Reply], elapsed: float, connections: int,
                 prepared: float, receiver_commands: int) -> dict[str, Any]:
    latencies = sorted(r.seconds * 1000 for r in replies)
    by_class: dict[str, Counter[str]] = {m.kind: Counter() for m in CATALOGUE}
    for mutant, reply in zip(mutants, replies, strict=True):
        by_class[mutant.kind][f"{reply.status} {reply.reason}"] += 1
    return {
        "requests": len(replies), "seconds": round(elapsed, 1), "prepare_seconds": round(prepared, 1),
        "requests_per_second": round(len(replies) / elapsed), "connections": connections,
        "latency_ms": [round(latencies[len(latencies) // 2], 1), round(latencies[int(len(latencies) * 0.99)], 1),
                       round(latencies[-1], 1)],
        "replies": dict(Counter(f"{r.status} {r.reason}" for r in replies)),
        "by_family": dict(Counter(m.family for m in mutants)),
        "by_class": {kind: dict(counts) for kind, counts in by_class.items()},
        "receiver_redis_commands": receiver_commands,
    }


def assert_quiet_logs(events: Sequence[MutableMapping[str, Any]], records: Sequence[logging.LogRecord],
                      mutants: Sequence[Mutant], context: str) -> None:
    """One ``notification.rejected`` per refusal the receiver made, and nothing worse anywhere."""
    app_refusals = Counter(m.expect[1] for m in mutants if m.expect != HTTP_PARSER)
    rejected = Counter(str(e.get("reason")) for e in events if e["event"] == "notification.rejected")
    assert rejected == app_refusals, context
    loud = [e["event"] for e in events if e["event"] != "notification.rejected"
            or e.get("log_level") not in ("warning", "info") or "exc_info" in e]
    assert loud == [], context
    parser = sum(m.expect == HTTP_PARSER for m in mutants)
    assert [r.levelno for r in records if r.levelno >= logging.ERROR or r.exc_info] == [], context
    assert sum(r.getMessage() == PARSER_REFUSAL.decode() for r in records) == parser, context
