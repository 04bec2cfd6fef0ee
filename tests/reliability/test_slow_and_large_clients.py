"""Slow and large clients against the receiver as production serves it (issue 4, target 7).

The receiver runs as ``checus-worker web`` in its own process (uvicorn with uvloop and the
guarded httptools protocol, ``worker/receiver/web.py`` ``server_options``), with its default limits,
in front of a private redis-server and a SQLite store; no rq worker runs, so whatever the
receiver enqueued stays visible. The body limits are tested in ``tests/integration/
test_receiver_limits.py``; here:

- an oversized head (one huge header, too many headers, a huge request target) is refused with
  431 or 414 and a closed connection after the server read a bounded amount, leaving no trace;
- 50 connections trickling their headers at 1 byte/s, and separately 50 trickling their bodies,
  do not slow a stream of signed notifications (every one acknowledged), and the server cuts
  each of them (408) once its deadline has passed, instead of holding them for ever; a body
  nobody reads and a connection that never speaks are cut too;
- connections that fill ``limit_concurrency`` and stay silent get every other request a 503
  (Checus retries) only until the header deadline cuts them.

Timings are printed in the run's summary, never asserted; only generous liveness bounds are.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from redis import Redis

from tests.integration.test_receiver_harness import (
    ACK,
    APP_ID,
    MERCHANT_NO,
    PAYMENT,
    payment_note,
    raw_exchange,
    signer_of,
    statuses,
)
from tests.integration.test_receiver_limits import KERNEL_SLACK
from worker.config import Settings, SettingsError
from worker.devtools.bench.report import percentile
from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.gateway.signing import PortalKeyPair, Signer
from worker.gateway.wire import dumps
from worker.runtime.queueing import make_queue
from worker.store.db import create_engine, read
from worker.store.migrate import upgrade
from worker.store.schema import inbox

from .cluster import PASS_THROUGH, REPO
from .conftest import note
from .procs import Supervisor
from .settings import artifacts_root

DEFAULTS = Settings.from_env({})
HEADER_TIMEOUT = DEFAULTS.receiver_header_timeout
BODY_TIMEOUT = DEFAULTS.receiver_body_timeout
MAX_HEAD = DEFAULTS.receiver_max_header_bytes
LIVENESS = 3 * max(HEADER_TIMEOUT, BODY_TIMEOUT) + 15  # "cut at some point", not a timing claim
SLOW = 50
CONCURRENCY_LIMIT = 1000  # worker/receiver/web.py server_options
OFFERED = 16 * 1024 * 1024  # four times what the kernel buffers may absorb (KERNEL_SLACK)

pytestmark = pytest.mark.slow


@dataclass(kw_only=True)
class Receiver:
    """The ``web`` process, and the store and Redis it writes to."""

    url: str
    sup: Supervisor
    engine: sa.Engine
    redis: Redis
    signer: Signer
    sent: int = 0

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def state(self) -> dict[str, object]:
        """What a request could have left behind: inbox rows, rq jobs, the queue."""
        with read(self.engine) as conn:
            kept = sorted(conn.execute(sa.select(inbox.c.ref)).scalars())
        jobs = sorted(k.decode() for k in self.redis.scan_iter("rq:job:*"))
        return {"inbox": kept, "rq_jobs": jobs, "queued": make_queue(self.redis).count}

    def notification(self, prefix: str) -> tuple[str, bytes, str]:
        """A fresh signed payment notification (an order the store does not know: kept and acked)."""
        self.sent += 1
        ref = f"{prefix}_{self.sent}"
        raw = dumps(payment_note(ref))
        return ref, raw, self.signer.sign(raw)

    def deliver(self, client: httpx.Client, prefix: str) -> tuple[str, int, bytes, float]:
        ref, raw, sign = self.notification(prefix)
        began = time.monotonic()
        response = client.post(self.url + PAYMENT, content=raw,
                               headers={"content-type": "application/json", "sign": sign})
        return ref, response.status_code, response.content, time.monotonic() - began

    def log(self) -> str:
        return (self.sup.log_dir / "web.log").read_text(errors="replace")


@contextmanager
def web_process(root: Path, platform: PortalKeyPair, **settings: str) -> Iterator[Receiver]:
    """``checus-worker web`` in its own process with the production environment (plus ``settings``), in front of
    a redis-server and a SQLite store of its own, under ``root``."""
    redis_server = RedisServer(root / "redis").start()
    database_url = f"sqlite:///{root / 'store.db'}"
    engine = create_engine(database_url)
    upgrade(engine)
    port = free_port()
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    env.update({"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", "CHECUS_APP_ID": APP_ID,
                "CHECUS_MERCHANT_NO": MERCHANT_NO, "CHECUS_PLATFORM_PUBLIC_KEYS": platform.public_key,
                "REDIS_URL": redis_server.url, "DATABASE_URL": database_url, **settings})
    sup = Supervisor(root / "logs", cwd=REPO)
    rx = Receiver(url=f"http://127.0.0.1:{port}", sup=sup, engine=engine, redis=Redis.from_url(redis_server.url),
                  signer=signer_of(platform))
    try:
        sup.start("web", [sys.executable, "-m", "worker", "web", "--port", str(port)], env)
        if not sup.wait_until(rx.healthy, 30, interval=0.1):
            raise RuntimeError(f"the receiver did not come up (log in {sup.log_dir})")
        yield rx
    finally:
        sup.cleanup()
        rx.redis.close()
        engine.dispose()
        redis_server.stop()


def workdir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """Under ``CHECUS_RELIABILITY_ARTIFACTS`` when set (logs kept), else pytest's temporary directory."""
    kept = artifacts_root()
    return kept / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}" if kept else tmp_path_factory.mktemp(name)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, platform_keys: PortalKeyPair) -> Iterator[Receiver]:
    """The receiver with its default limits, shared by this module's tests (each compares before and after)."""
    with web_process(workdir(tmp_path_factory, "slow-clients"), platform_keys) as rx:
        yield rx


def assert_serving(rx: Receiver) -> None:
    """Healthy, and a signed notification is acknowledged."""
    assert rx.healthy()
    with httpx.Client(timeout=10.0) as client:
        _ref, status, body, _seconds = rx.deliver(client, "PROBE")
    assert (status, body) == (200, ACK)


def assert_no_tracebacks(rx: Receiver) -> None:
    log = rx.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, "see " + str(rx.sup.log_dir)


# -- oversized heads -----------------------------------------------------------------------------------------


def endless(byte: bytes, chunk: int = 16 * 1024, total: int = OFFERED) -> Iterator[bytes]:
    for _ in range(total // chunk):
        yield byte * chunk


def many_headers() -> Iterator[bytes]:
    """Fewer than 100 fields by the time they pass 16 KiB: the byte limit, not the count, refuses them."""
    for n in range(OFFERED // 512):
        yield b"X-H%08d: " % n + b"v" * 500 + b"\r\n"


HEADS = {
    # name: (what is sent first, what follows it, the status, the reason)
    "one huge header": (b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\nX-Big: ", endless(b"a"), 431,
                        "head_too_large"),
    "many headers past the byte limit": (b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\n", many_headers(),
                                         431, "head_too_large"),
    "more than 100 small headers": (b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\n",
                                    iter([b"".join(b"X-%d: v\r\n" % n for n in range(150))]), 431, "too_many_headers"),
    "a huge request target": (b"POST " + PAYMENT.encode() + b"?q=", endless(b"a"), 414, "head_too_large"),
}


@pytest.mark.parametrize("case", list(HEADS))
def test_an_oversized_head_is_refused_after_a_bounded_read(receiver: Receiver, case: str) -> None:
    """431 (414 for the request target), ``connection: close`` and a hang-up, having let the client push no
    more than the kernel buffers hold; no inbox row, no job; the server goes on serving."""
    first, rest, status, reason = HEADS[case]
    before = receiver.state()
    answer, sent = raw_exchange(receiver.url, first, rest, timeout=10.0)
    assert statuses(answer) == [status], answer[:200]
    assert b"connection: close" in answer.lower()
    assert answer.endswith(b'{"code":"FAIL","msg":"' + reason.encode() + b'"}')
    assert sent < KERNEL_SLACK, sent
    assert receiver.state() == before
    assert_serving(receiver)
    note(f"slow clients: {case}: {status} after the client pushed {sent:,} bytes (head limit {MAX_HEAD:,})")


def test_a_head_of_exactly_the_limit_is_served(receiver: Receiver) -> None:
    """The limit is inclusive: a notification whose request line and headers take exactly 16 KiB is acked."""
    ref, raw, sign = receiver.notification("AT_LIMIT")
    head = (b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(raw)).encode() + b"\r\n"
            b"sign: " + sign.encode() + b"\r\nX-Pad: ")
    head += b"p" * (MAX_HEAD - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == MAX_HEAD
    answer, _sent = raw_exchange(receiver.url, head + raw, [], timeout=5.0)
    assert statuses(answer) == [200] and answer.endswith(ACK)
    assert ref in receiver.state()["inbox"]  # type: ignore[operator]


# -- slow senders ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Trickler:
    """One connection sending ``fast`` at once, then ``slow`` one byte per tick, and what came back."""

    fast: bytes
    slow: bytes
    sock: socket.socket = field(init=False)
    opened: float = field(init=False)
    cut: float | None = None  # seconds from open until the server hung up
    answer: bytes = b""

    def open(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5.0)
        self.opened = time.monotonic()
        if self.fast:
            self.sock.sendall(self.fast)
        self.sock.setblocking(False)

    def tick(self) -> None:
        if self.cut is None and self.slow:
            try:
                self.sock.send(self.slow[:1])
                self.slow = self.slow[1:]
            except OSError:
                self.hung_up()

    def readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.answer += data
        else:
            self.hung_up()

    def hung_up(self) -> None:
        if self.cut is None:
            self.cut = time.monotonic() - self.opened
            self.sock.close()


def trickle(url: str, conns: list[Trickler], *, limit: float = LIVENESS) -> None:
    """Open every connection, feed each one byte a second until the server hangs up (or ``limit`` passes)."""
    for conn in conns:
        conn.open(url)
    deadline = time.monotonic() + limit
    next_tick = time.monotonic()
    try:
        while time.monotonic() < deadline:
            live = [c for c in conns if c.cut is None]
            if not live:
                return
            now = time.monotonic()
            if now >= next_tick:
                for conn in live:
                    conn.tick()
                next_tick += 1.0
                continue
            # selectors (epoll), not select.select: in a long test session these sockets get descriptors
            # above select's limit of 1,024
            with selectors.DefaultSelector() as selector:
                for conn in live:
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
                ready = selector.select(min(next_tick, deadline) - now)
            for key, _events in ready:
                key.data.readable()
    finally:
        for conn in conns:
            if conn.cut is None:
                conn.sock.close()


@dataclass
class GoodTraffic:
    """Signed notifications, one every 50 ms on one keep-alive connection, while the slow clients trickle."""

    rx: Receiver
    results: list[tuple[str, int, bytes, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="good-traffic", daemon=True)

    def __enter__(self) -> GoodTraffic:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self.stop.wait(0.05):
                try:
                    self.results.append(self.rx.deliver(client, "GOOD"))
                except httpx.HTTPError as exc:
                    self.errors.append(type(exc).__name__)

    def figures(self) -> str:
        ms = sorted(r[3] * 1000 for r in self.results)
        return (f"{len(ms)} notifications acked, latency p50 {percentile(ms, 0.5):.1f} ms,"
                f" p99 {percentile(ms, 0.99):.1f} ms")


def assert_all_cut(conns: list[Trickler]) -> None:
    held = sum(1 for c in conns if c.cut is None)
    assert held == 0, f"{held} of {len(conns)} connections still open after {LIVENESS:g} s"


def cut_figures(conns: list[Trickler]) -> str:
    cuts = sorted(c.cut for c in conns if c.cut is not None)
    return f"cut after {cuts[0]:.1f}–{cuts[-1]:.1f} s" if cuts else "never cut"


def trickle_beside_good_traffic(rx: Receiver, conns: list[Trickler]) -> GoodTraffic:
    """Trickle ``conns`` while the stream of signed notifications runs. Then: every connection was cut, every
    notification of the stream was acknowledged and only they were kept, and the server is serving, with no
    traceback in its log."""
    before = rx.state()
    with GoodTraffic(rx) as good:
        trickle(rx.url, conns)
    assert_all_cut(conns)
    assert good.errors == [] and len(good.results) >= 20, (good.errors, len(good.results))
    assert all((status, body) == (200, ACK) for _ref, status, body, _s in good.results)
    kept = set(rx.state()["inbox"]) - set(before["inbox"])  # type: ignore[call-overload]
    assert kept == {ref for ref, *_ in good.results}
    assert_serving(rx)
    assert_no_tracebacks(rx)
    return good


def timed_out(conn: Trickler) -> bool:
    return statuses(conn.answer) == [408] and conn.answer.endswith(b'{"code":"FAIL","msg":"request_timeout"}')


def test_slow_headers_and_silent_connections_are_cut_while_good_traffic_flows(receiver: Receiver) -> None:
    """50 connections sending their request line and headers at 1 byte/s get 408 and a hang-up once the header
    deadline passed; 10 that never send a byte are closed then too; meanwhile every notification is acked."""
    head = b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\nsign: x\r\n"
    slow = [Trickler(fast=b"", slow=head * 4) for _ in range(SLOW)]
    silent = [Trickler(fast=b"", slow=b"") for _ in range(10)]
    good = trickle_beside_good_traffic(receiver, slow + silent)
    assert all(timed_out(c) for c in slow)
    assert all(c.answer == b"" for c in silent)
    note(f"slow clients: {SLOW} header tricklers (1 B/s) {cut_figures(slow)} with 408, 10 silent connections "
         f"{cut_figures(silent)} (header timeout {HEADER_TIMEOUT:g} s); meanwhile {good.figures()}")


def test_slow_bodies_are_cut_with_408_while_good_traffic_flows(receiver: Receiver) -> None:
    """50 notifications whose headers come at once and whose body trickles at 1 byte/s get 408 and a hang-up once
    the body deadline passed, and leave nothing behind; 10 bodies nobody reads (a 404 path) are cut after the
    header deadline that follows the 404; meanwhile every notification is acked."""
    body_len = 400  # at 1 byte/s, far longer than any deadline

    def head(path: str) -> bytes:
        return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(body_len).encode() + b"\r\nsign: x\r\n\r\n")

    slow = [Trickler(fast=head(PAYMENT), slow=b" " * body_len) for _ in range(SLOW)]
    unread = [Trickler(fast=head("/checus/notify/nowhere"), slow=b" " * body_len) for _ in range(10)]
    good = trickle_beside_good_traffic(receiver, slow + unread)
    assert all(timed_out(c) for c in slow)
    assert all(statuses(c.answer) == [404] for c in unread)
    note(f"slow clients: {SLOW} body tricklers (1 B/s) {cut_figures(slow)} with 408 (body timeout {BODY_TIMEOUT:g} s),"
         f" 10 unread bodies {cut_figures(unread)} after their 404; meanwhile {good.figures()}")


def test_silent_connections_filling_the_concurrency_limit_are_cut_and_traffic_resumes(receiver: Receiver) -> None:
    """1,000 connections that never speak fill ``limit_concurrency``: meanwhile a notification gets 503 (never an
    ack, never a hang; Checus retries); once the header deadline closes them, notifications are acked again."""
    silent = [Trickler(fast=b"", slow=b"") for _ in range(CONCURRENCY_LIMIT)]
    flood = threading.Thread(target=trickle, args=(receiver.url, silent), name="silent-flood", daemon=True)
    answers: list[tuple[float, int]] = []
    began = time.monotonic()
    flood.start()
    with httpx.Client(timeout=10.0) as client:
        time.sleep(1.0)  # every silent connection is open (opening them takes a few ms each)
        while flood.is_alive() and time.monotonic() - began < LIVENESS:
            _ref, status, _body, _s = receiver.deliver(client, "DURING_FLOOD")
            answers.append((time.monotonic() - began, status))
            time.sleep(0.2)
    flood.join(5)
    assert_all_cut(silent)
    assert {status for _t, status in answers} <= {200, 503}, answers
    refused = [t for t, status in answers if status == 503]
    assert refused, "the flood never reached the concurrency limit: the scenario did not happen"
    assert_serving(receiver)
    note(f"slow clients: {CONCURRENCY_LIMIT} silent connections {cut_figures(silent)}; notifications got 503 "
         f"{len(refused)} times until {refused[-1]:.1f} s, then acked")


def test_the_limits_follow_their_settings(tmp_path_factory: pytest.TempPathFactory, platform_keys: PortalKeyPair
                                          ) -> None:
    """``CHECUS_RECEIVER_MAX_HEADER_BYTES`` / ``_HEADER_TIMEOUT`` / ``_BODY_TIMEOUT`` set the limits: a 3 KiB head
    the defaults accept is 431 under a 2 KiB limit, and 1 s deadlines cut a header and a body trickler."""
    settings = {"CHECUS_RECEIVER_MAX_HEADER_BYTES": "2048", "CHECUS_RECEIVER_HEADER_TIMEOUT": "1",
                "CHECUS_RECEIVER_BODY_TIMEOUT": "1"}
    with web_process(workdir(tmp_path_factory, "slow-clients-settings"), platform_keys, **settings) as rx:
        ref, raw, sign = rx.notification("SETTINGS")
        padded = {"content-type": "application/json", "sign": sign, "x-pad": "p" * 3000}
        refused = httpx.post(rx.url + PAYMENT, content=raw, headers=padded, timeout=10.0)
        assert refused.status_code == 431 and refused.json() == {"code": "FAIL", "msg": "head_too_large"}
        head = b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\n"
        conns = [Trickler(fast=b"", slow=head), Trickler(fast=head + b"Content-Length: 100\r\n\r\n", slow=b" " * 100)]
        trickle(rx.url, conns, limit=20.0)
        assert_all_cut(conns)
        assert all(timed_out(c) for c in conns)
        assert ref not in rx.state()["inbox"]  # type: ignore[operator]
        assert_serving(rx)
    note(f"slow clients: with 1 s settings, a header trickler {cut_figures(conns[:1])}, a body trickler "
         f"{cut_figures(conns[1:])}")


def test_a_head_limit_below_1_kib_is_refused_at_start() -> None:
    """A head limit too small for any real request is a configuration error naming the variable."""
    with pytest.raises(SettingsError, match="CHECUS_RECEIVER_MAX_HEADER_BYTES"):
        Settings.from_env({"CHECUS_RECEIVER_MAX_HEADER_BYTES": "512"})
