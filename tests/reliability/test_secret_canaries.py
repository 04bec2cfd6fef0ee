"""Secret canaries through every path (issue 4, target 9; reliability notes §6, goal G12).

The real processes (simulator, receiver, a forking and a simple rq worker, the scheduler, the CLI)
carry payments, tokens and refunds through every path, errors included, and afterwards the
canaries must appear **0 times** in any process log, any HTTP error body, any rq job (data,
description, exc_info, meta, results, in every registry), any Redis key or value of any type, and
the Redis AOF (which still holds what was deleted before the scan).

The canaries: the merchant private key, configured as a PEM file (the forking worker, the
scheduler, some CLI runs) and as a portal single-line Base64 DER value (the simple worker, the
merchant's process, other CLI runs); the simulator's platform private key; every ``sign`` value
that crossed the wire (requests, responses, notifications), collected by two recording relays on
loopback, one in front of the simulator's API and one in front of the receiver, so nothing has
to be logged to be known; the Luhn-valid test card number typed on the hosted cashier page; the
full token ids the simulator minted; the merchant events webhook secret. Each is matched exactly;
keys, sign values and the webhook secret also by every 32-character window (the storm's matcher,
made exhaustive). A positive control plants canaries and checks that the scanner finds them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from redis import Redis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer
from structlog.testing import capture_logs
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from worker.devtools.demo.redis_server import RedisServer
from worker.logs import redact
from worker.runtime.queueing import make_queue
from worker.service_errors import RefundRefused, TokenRefused

from .cluster import REPO, Cluster, ClusterSpec
from .conftest import note
from .rq_registries import REGISTRIES

WINDOW = 32
CARD = "4111111111111111"  # Luhn-valid VISA test number, typed on the cashier page
USER = "canary_user"
RETURN = "https://shop.test/return"
FAILED_JOB = "canary-poll-under-a-broken-key"
FAILING_JOB = "canary-job-that-fails"
_RUN = re.compile(rf"[A-Za-z0-9+/=_-]{{{WINDOW},}}")  # where a window of a key, sign or secret can hide
_DIGIT_RUN = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
PRODUCT_PROCESSORS: list[Processor] = [  # how every process renders its events: tracebacks, then redaction
    structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)), redact]


# -- the scanner -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Canary:
    label: str  # printed instead of the value, always
    value: str
    windowed: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    where: str
    label: str
    how: str  # exact, window or digits


def _flat(text: str) -> str:
    return "".join(text.split())


def _windows(text: str) -> Iterator[str]:
    return (text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1))


class Scanner:
    """Finds canaries in text: exactly, by any 32-character window, and card numbers by their digits."""

    def __init__(self, canaries: Sequence[Canary], public: Iterable[str] = ()) -> None:
        shared = {w for p in public for w in _windows(_flat(p))}  # a public key shares the modulus
        self.exact = {c.value: c.label for c in canaries}
        self.windows = {w: c.label for c in canaries if c.windowed for w in _windows(_flat(c.value))
                        if w not in shared}
        self.digits = {c.value: c.label for c in canaries if c.value.isdigit()}
        self.bytes = Counter[str]()

    def scan(self, target: str, where: str, text: str) -> list[Hit]:
        self.bytes[target] += len(text.encode("utf-8", "replace"))
        found = {label: "exact" for value, label in self.exact.items() if value in text}
        for run in _RUN.finditer(text):
            for window in _windows(run.group(0)):
                label = self.windows.get(window)
                if label is not None:
                    found.setdefault(label, "window")
        for run in _DIGIT_RUN.finditer(text):
            label = self.digits.get(re.sub(r"\D", "", run.group(0)))
            if label is not None:
                found.setdefault(label, "digits")
        return [Hit(where, label, how) for label, how in sorted(found.items())]


def _decoded(raw: bytes) -> list[str]:
    """A Redis value as text, plus what rq hides in it: zlib (job data, exc_info), Base64 of zlib (results)."""
    texts = [raw.decode("utf-8", "replace")]
    try:
        unwrapped: bytes | None = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        unwrapped = None
    for candidate in (raw, unwrapped):
        if candidate:
            with contextlib.suppress(zlib.error):
                texts.append(zlib.decompress(candidate).decode("utf-8", "replace"))
    return texts


def redis_texts(client: Redis) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Every key of every type, name and value (SCAN), decoded; and how many keys of each type."""
    redis: Any = client  # bytes in, bytes out (no decode_responses)
    texts, kinds = [], Counter[str]()
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        parts: list[bytes] = [key]
        if kind == "string":
            parts.append(redis.get(key) or b"")
        elif kind == "hash":
            parts += [b for pair in redis.hgetall(key).items() for b in pair]
        elif kind == "list":
            parts += redis.lrange(key, 0, -1)
        elif kind == "set":
            parts += list(redis.smembers(key))
        elif kind == "zset":
            parts += [member for member, _score in redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts += [b for _id, entry in redis.xrange(key) for pair in entry.items() for b in pair]
        elif kind != "none":
            parts.append(redis.dump(key) or b"")
        kinds[kind] += 1
        text = "\n".join(t for p in parts for t in _decoded(p))
        texts.append((f"redis {kind} {key.decode('utf-8', 'replace')}", text))
    return texts, kinds


def job_texts(redis: Redis) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Every rq job (queued, every registry, any ``rq:job:*`` hash), read through rq: arguments,
    description, meta, exc_info and every result's exception text and return value."""
    queue = make_queue(redis)
    counts = Counter[str]()
    ids = {k.decode().removeprefix("rq:job:") for k in redis.scan_iter("rq:job:*", count=1000)}
    ids |= set(queue.get_job_ids())
    for name, registry in REGISTRIES.items():
        held = registry(queue=queue).get_job_ids()
        counts[name] = len(held)
        ids |= set(held)
    texts = []
    for job in Job.fetch_many(sorted(ids), connection=redis, serializer=JSONSerializer):
        if job is None:
            continue
        parts = [job.id, job.description or "", job.func_name or "", repr(job.args), repr(job.kwargs),
                 json.dumps(job.meta, default=str), str(job._exc_info or "")]
        for result in Result.all(job, serializer=JSONSerializer):
            parts += [str(result.exc_string or ""), repr(result.return_value)]
        counts["jobs"] += 1
        texts.append((f"rq job {job.id}", "\n".join(parts)))
    return texts, counts


def aof_texts(directory: Path) -> tuple[list[tuple[str, str]], int]:
    """Every argument of every command in the AOF files (RESP), decoded like a Redis value."""
    texts, commands = [], 0
    for path in sorted(directory.rglob("*.aof")):
        raw = path.read_bytes()
        if not raw.startswith(b"*"):
            continue  # an RDB preamble: written at a rewrite, never here
        args = re.findall(rb"\$(\d+)\r\n", raw)
        commands += raw.count(b"\r\n*") + 1
        pos, parts = 0, []
        for size in args:
            start = raw.index(b"$" + size + b"\r\n", pos) + len(size) + 3
            parts += _decoded(raw[start:start + int(size)])
            pos = start + int(size)
        texts.append((f"aof {path.name}", "\n".join(parts)))
    return texts, commands


# -- recording relays ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    path: str
    at: float
    request_body: bytes
    request_sign: str | None
    status: int | None  # None: no answer came (dropped, or the client gave up)
    response_sign: str | None
    response_body: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up (timeouts) is part of the scenario


class RecordingRelay:
    """A loopback HTTP relay that forwards each POST as is and records the ``sign`` header both ways
    and the answers: the test learns every sign value that crossed the wire without any log."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.http = httpx.Client(timeout=30.0)
        self.lock = threading.Lock()
        self.exchanges: list[Exchange] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                relay.forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="relay", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("content-type", "sign")}
        at = time.monotonic()
        try:
            response = self.http.post(self.target + handler.path, content=body, headers=headers)
        except httpx.HTTPError:
            self._record(Exchange(handler.path, at, body, headers.get("sign"), None, None, ""))
            handler.close_connection = True  # like the far end: no answer at all
            return
        self._record(Exchange(handler.path, at, body, headers.get("sign"), response.status_code,
                              response.headers.get("sign"), response.text))
        try:
            handler.send_response(response.status_code)
            for name in ("content-type", "sign"):
                if name in response.headers:
                    handler.send_header(name, response.headers[name])
            handler.send_header("content-length", str(len(response.content)))
            handler.end_headers()
            handler.wfile.write(response.content)
        except OSError:
            handler.close_connection = True

    def _record(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def seen(self, path_part: str, since: float, check: Callable[[Exchange], bool] = lambda _e: True) -> int:
        with self.lock:
            return sum(1 for e in self.exchanges if path_part in e.path and e.at >= since and check(e))

    def signs(self) -> tuple[list[str], list[str]]:
        with self.lock:
            return ([e.request_sign for e in self.exchanges if e.request_sign],
                    [e.response_sign for e in self.exchanges if e.response_sign])

    def error_bodies(self) -> list[str]:
        """Non-2xx answers, and gateway answers whose code is not APPLY_SUCCESS."""
        with self.lock:
            return [e.response_body for e in self.exchanges
                    if e.status is not None and (e.status >= 300 or _refused(e.response_body))]


def _refused(body: str) -> bool:
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return False
    return code not in (None, "APPLY_SUCCESS", "SUCCESS")


# -- the deployment --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cli:
    """One ``checus-worker`` run: its arguments, the key configuration, whether it must succeed."""

    name: str
    args: tuple[str, ...]
    key: str = "value"
    ok: bool = True


class CanaryCluster(Cluster):
    """The harness's cluster with the gateway and the receiver behind recording relays, and the
    merchant key in both formats: a PEM file (mode 0600) and the portal's Base64 DER value."""

    def __init__(self, *, root: Path, redis: RedisServer, database_url: str) -> None:
        spec = ClusterSpec(fork_workers=0, simple_workers=0, schedulers=0, refund_auto_complete_seconds=None)
        super().__init__(root=root, redis=redis, database_url=database_url, spec=spec)
        self.gateway_relay = RecordingRelay(self.sim.base_url)
        self.notify_relay = RecordingRelay(self.receiver_url)
        self.http = httpx.Client(timeout=15.0)
        self.refused_at_gateway: set[str] = set()  # orders Checus refused outright: it holds no record of them
        self.pem = self._pem()
        keys = root / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        lines = self.pem.splitlines()
        self.key_files = {"pem-file": keys / "merchant.pem", "broken-file": keys / "broken.pem",
                          "open-file": keys / "open.pem"}
        for name, text, mode in (("pem-file", self.pem, 0o600), ("open-file", self.pem, 0o644),
                                 ("broken-file", "\n".join(lines[:10] + lines[12:]) + "\n", 0o600)):
            self.key_files[name].write_text(text)
            self.key_files[name].chmod(mode)

    def _pem(self) -> str:
        der = base64.b64decode(self.merchant.private_key)
        key = serialization.load_der_private_key(der, password=None)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    def worker_env(self) -> dict[str, str]:
        env = super().worker_env()
        env.update({"CHECUS_GATEWAY_URL": self.gateway_relay.url, "CHECUS_NOTIFY_BASE_URL": self.notify_relay.url,
                    "CHECUS_POLL_LADDER": "60,100", "COLUMNS": "200"})
        return env

    def status(self) -> dict[str, int]:
        """The harness's, except that an order Checus refused outright (so never recorded) is not off its truth."""
        status = super().status()
        status["off_truth"] -= len(self.refused_at_gateway)
        return status

    def env(self, key: str) -> dict[str, str]:
        """Settings with the merchant key as ``value`` (Base64 DER), ``pem-file``, or broken on purpose:
        ``broken-value`` (a truncated value), ``broken-file`` (a PEM missing two lines), ``open-file`` (0644)."""
        env = self.worker_env()
        if key == "value":
            return env
        env.pop("CHECUS_MERCHANT_PRIVATE_KEY")
        if key == "broken-value":
            env["CHECUS_MERCHANT_PRIVATE_KEY"] = self.merchant.private_key[:800]
        else:
            env["CHECUS_MERCHANT_PRIVATE_KEY_FILE"] = str(self.key_files[key])
        return env

    def start(self) -> CanaryCluster:
        self.gateway_relay.start()
        self.notify_relay.start()
        super().start()
        return self

    def start_roles(self) -> None:
        python = [sys.executable, "-m", "worker"]
        self.sup.start("fork-0", [*python, "work", "--fork"], self.env("pem-file"))
        self.sup.start("simple-0", [*python, "work"], self.env("value"))
        self.sup.start("scheduler-0", [*python, "scheduler", "--interval", "0.2"], self.env("pem-file"))
        self.workers += ["fork-0", "simple-0"]

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.gateway_relay.stop()
            self.notify_relay.stop()
            self.http.close()

    def cli(self, runs: Sequence[Cli], *, parallel: int = 3) -> list[str]:
        """``checus-worker`` runs, a few side by side, each in its own process; their output joins the scanned
        logs. A run that hangs fails the test, with every thread's stack (faulthandler) in its log."""
        outputs: dict[str, str] = {}
        pending, running = list(runs), list[tuple[Cli, subprocess.Popen[str]]]()
        while pending or running:
            while pending and len(running) < parallel:
                run = pending.pop(0)
                running.append((run, subprocess.Popen(
                    [sys.executable, "-m", "worker", *run.args], env={**self.env(run.key), "PYTHONFAULTHANDLER": "1"},
                    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
            run, process = running.pop(0)
            outputs[run.name] = self._finish(run, process)
        return [outputs[run.name] for run in runs]

    def _finish(self, run: Cli, process: subprocess.Popen[str]) -> str:
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            output, _ = process.communicate(timeout=10)
            output += "\n(hung: stopped after 60 s)"
        (self.sup.log_dir / f"cli-{run.name}.log").write_text(f"$ checus-worker {' '.join(run.args)}\n{output}")
        assert not output.endswith("(hung: stopped after 60 s)"), f"checus-worker {run.name} hung"
        assert (process.returncode == 0) is run.ok, f"checus-worker {run.name}: exit {process.returncode}"
        return output


# -- the paths -------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.1)


@dataclass
class Paths:
    """Drives every path the way a merchant, a payer and an operator would."""

    c: CanaryCluster
    later: list[Cli] = field(default_factory=list)  # runs whose order does not matter, side by side at the end
    cli_runs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def refund_state(self, no: str) -> str | None:
        view = self.c.service.get_refund(no)
        return view.refund.state if view else None

    def refund_history(self, no: str) -> list[str]:
        view = self.c.service.get_refund(no)
        return [h.to_state for h in view.history] if view else []

    def settled(self, no: str, state: str = "SUCCESS") -> None:
        wait_for(f"{no} {state}", lambda: self.c.state_of(no) == state)

    def cashier(self, url: str | None, action: str) -> None:
        """The payer on the hosted page: types the card number, keeps "save card" ticked, submits."""
        assert url, "no cashier URL"
        form = {"action": action, "save_card": "on", "card_number": CARD, "card_holder": "CANARY PAYER",
                "expiry": "12/30"}
        assert self.c.http.post(url, data=form).status_code == 200

    def hosted(self, no: str, amount: str = "100.00", *, user: str = USER, save: bool = True) -> str | None:
        return self.c.service.create_card_payment(
            out_trade_no=no, amount=Decimal(amount), currency="USD", user_id=user, subject="Canary basket",
            front_callback_url=RETURN, save_card=save, country="US", allowed_card_orgs=("VISA",)).redirect_url

    def cli(self, *runs: Cli) -> list[str]:
        self.cli_runs += len(runs)
        return self.c.cli(runs)

    def timed(self, name: str, step: Callable[[], Any]) -> Any:
        began = time.monotonic()
        try:
            return step()
        finally:
            self.seconds[name] = round(time.monotonic() - began, 1)

    def run(self) -> None:
        self.timed("broken keys", self.broken_keys)
        self.c.start_roles()
        token = self.timed("payments", self.first_payment_and_token_payments)
        self.timed("refunds", self.refunds)
        self.timed("gateway faults", self.gateway_faults)
        self.timed("notification faults", self.notification_faults)
        self.timed("tokens", lambda: self.tokens(token))
        self.timed("reads and CLI errors", self.reads)

    def broken_keys(self) -> None:
        """Before any healthy worker runs: a worker with a broken key refuses to start, naming the
        setting and not its value, and runs nothing (the job waiting for it stays queued for the healthy
        workers); the CLI refuses a world-readable key file and a broken one."""
        self.hosted("CANARY_BROKEN_KEY", "10.00", user="canary_other", save=False)
        view = self.c.service.get_order("CANARY_BROKEN_KEY")
        assert view is not None
        make_queue(self.c.redis).enqueue("worker.jobs.poll_order", view.order.id, job_id=FAILED_JOB,
                                         description=FAILED_JOB, failure_ttl=3600, result_ttl=0)
        # and a job the healthy workers will fail (its argument is no record id): rq keeps its exception
        # text in the failed registry, which the scan must cover (and does: its planted canary is found)
        make_queue(self.c.redis).enqueue("worker.jobs.poll_order", "not-a-record-id", job_id=FAILING_JOB,
                                         description=FAILING_JOB, failure_ttl=3600, result_ttl=0)
        outputs = self.cli(
            Cli("broken-key-worker", ("work", "--burst"), key="broken-value", ok=False),
            Cli("open-key-pay-json", ("pay", "CANARY_OPEN_KEY", "5.00", "--user", USER, "--json"), key="open-file",
                ok=False),
            Cli("broken-key-pay", ("pay", "CANARY_BROKEN_PEM", "5.00", "--user", USER), key="broken-file", ok=False))
        assert "CHECUS_MERCHANT_PRIVATE_KEY" in outputs[0], "the worker did not name the broken setting"
        assert "chmod 600" in outputs[1] and "CHECUS_MERCHANT_PRIVATE_KEY" in outputs[2]
        assert FAILED_JOB in make_queue(self.c.redis).job_ids, "a worker with a broken key ran a job"

    def first_payment_and_token_payments(self) -> int:
        self.cashier(self.hosted("CANARY_FIRST"), "success")
        self.settled("CANARY_FIRST")
        wait_for("token saved", lambda: bool(self.c.service.list_tokens(USER, sync=False)))
        token = self.c.service.list_tokens(USER, sync=False)[0].id
        for no, subject in (("CANARY_TOKEN", "Second purchase"), ("CANARY_TOKEN_3DS", "3DS")):
            result = self.c.service.pay_with_token(
                out_trade_no=no, user_id=USER, token=token, amount=Decimal("5.00"), currency="USD", country="US",
                subject=subject, client_ip="203.0.113.7", user_agent="canary-browser")
            if result.redirect_url:
                self.cashier(result.redirect_url, "3ds_pass")
            self.settled(no)
        self.cli(Cli("pay-token-json", ("pay", "CANARY_TOKEN_CLI", "4.00", "--user", USER, "--token", str(token),
                                        "--json"), key="pem-file"))
        self.settled("CANARY_TOKEN_CLI")
        return token

    def refunds(self) -> None:
        """Partial and multiple refunds (one failed, one whose answer is badly signed), and over-asks refused."""
        self.c.service.refund("CANARY_FIRST", Decimal("30.00"), out_refund_no="CANARY_R1")
        self._settle_refund("CANARY_R1", "REFUND_SUCCESS")
        self.cli(Cli("refund-create-json", ("refund", "create", "CANARY_FIRST", "20.00", "--out-refund-no",
                                            "CANARY_R2", "--json"), key="pem-file"))
        self._settle_refund("CANARY_R2", "REFUND_FAILED")
        self.c.sim.set_faults({"endpoints": {"refund": {"bad_signature": True}}})
        self.c.service.refund("CANARY_FIRST", Decimal("25.00"), out_refund_no="CANARY_R3")
        wait_for("a badly signed refund answer", lambda: "UNKNOWN" in self.refund_history("CANARY_R3"))
        self.c.sim.clear_faults()
        self._settle_refund("CANARY_R3", "REFUND_SUCCESS")
        with pytest.raises(RefundRefused):
            self.c.service.refund("CANARY_FIRST", Decimal("1000.00"))
        self.later.append(Cli("refund-over", ("refund", "create", "CANARY_FIRST", "1000.00"), ok=False))

    def _settle_refund(self, no: str, outcome: str) -> None:
        wait_for(f"{no} pending", lambda: self.refund_state(no) == "REFUND_PENDING")
        assert self.c.sim.complete_refund(no, outcome) == 200
        wait_for(f"{no} {outcome}", lambda: self.refund_state(no) == outcome)

    def gateway_faults(self) -> None:
        """Polls meet 5xx, timeouts, badly signed and unsigned answers; a create meets a 502 (outcome
        unknown, resolved by query and resent)."""
        self.hosted("CANARY_FAULTS", "12.00", save=False)
        query_faults: list[dict[str, Any]] = [
            {"error_rate": 1, "error_code": "http_500"}, {"timeout_rate": 1, "timeout_seconds": 2.5},
            {"bad_signature": True}, {"unsigned": True}]
        for fault in query_faults:
            self.c.sim.set_faults({"endpoints": {"orderQuery": fault}})
            wait_for(f"polls under {fault}", self._polled(since=time.monotonic()))
        self.cli(Cli("reconcile-under-faults", ("reconcile", "--rate", "50"), key="pem-file"))
        self.c.sim.set_faults({"endpoints": {"orderAndPay": {"error_rate": 1, "error_code": "http_502"}}})
        assert self.c.service.create_card_payment(
            out_trade_no="CANARY_UNKNOWN", amount=Decimal("7.00"), currency="USD", user_id="canary_other",
            subject="Unknown", front_callback_url=RETURN).state == "UNKNOWN"
        self.c.sim.clear_faults()
        wait_for("the unknown create resent", lambda: self.c.sim.order("CANARY_UNKNOWN") is not None)

    def notification_faults(self) -> None:
        """Badly signed notifications (401), then the gateway's retry is acknowledged; tampered copies,
        a missing sign and a sign of another body sent straight to the receiver are refused."""
        since = time.monotonic()
        self.c.sim.set_faults({"notifications": {"bad_signature_rate": 1}})
        order = self.c.sim.order("CANARY_FAULTS")
        assert order is not None
        self.cashier(self._cashier_url(str(order["tradeToken"])), "success")
        wait_for("a badly signed notification refused",
                 lambda: self.c.notify_relay.seen("/notify/", since, lambda e: e.status == 401) >= 1)
        self.c.sim.clear_faults()
        self.settled("CANARY_FAULTS")
        good = [e for e in self.c.notify_relay.exchanges if e.status == 200 and e.request_sign]
        assert len(good) >= 2
        first, other = good[0], good[-1]
        url = self.c.notify_relay.url + first.path
        for body, sign in ((first.request_body + b" ", first.request_sign), (first.request_body, None),
                           (first.request_body, other.request_sign), (first.request_body, first.request_sign)):
            headers = {"content-type": "application/json", **({"sign": sign} if sign else {})}
            response = self.c.http.post(url, content=body, headers=headers)
            assert response.status_code in (200, 401)

    def _polled(self, *, since: float) -> Callable[[], bool]:
        return lambda: self.c.gateway_relay.seen("orderQuery", since) >= 2

    def _cashier_url(self, trade_token: str) -> str:
        return f"{self.c.sim.base_url}/cashier/{trade_token}"

    def tokens(self, token: int) -> None:
        """Listing and removal; a payment with the removed token (refused locally), and with a token the
        gateway expired but we still hold as Activated (refused by the gateway)."""
        listed = self.c.service.list_tokens(USER, sync=True)
        assert [t.status for t in listed] == ["Activated"]
        self.later.append(Cli("tokens-list-json", ("tokens", "list", USER, "--json"), key="pem-file"))
        assert self.c.service.remove_token(USER, token, reason="canary").status == "Deleted"
        with pytest.raises(TokenRefused):
            self.c.service.pay_with_token(out_trade_no="CANARY_DELETED", user_id=USER, token=token,
                                          amount=Decimal("1.00"), currency="USD", country="US", subject="x",
                                          client_ip="203.0.113.7", user_agent="canary-browser")
        self.later += [Cli("pay-deleted-token-json", ("pay", "CANARY_DELETED_CLI", "1.00", "--user", USER, "--token",
                                                      str(token), "--json"), ok=False),
                       Cli("tokens-remove-again", ("tokens", "remove", USER, str(token)), key="pem-file", ok=False)]
        self.cashier(self.hosted("CANARY_SECOND", "9.00"), "success")
        self.settled("CANARY_SECOND")
        fresh = [t for t in self.c.service.list_tokens(USER, sync=False) if t.status == "Activated"]
        assert fresh, "no second token"
        for minted in self.c.sim.http.get("/tokens", params={"userId": USER}).json()["tokens"]:
            self.c.sim.http.post(f"/tokens/{minted['paymentTokenID']}/expire").raise_for_status()
        refused = self.c.service.pay_with_token(out_trade_no="CANARY_EXPIRED", user_id=USER, token=fresh[0].id,
                                                amount=Decimal("1.00"), currency="USD", country="US", subject="x",
                                                client_ip="203.0.113.7", user_agent="canary-browser")
        assert refused.state == "FAILED" and self.c.sim.order("CANARY_EXPIRED") is None
        self.c.refused_at_gateway.add("CANARY_EXPIRED")
        self.c.service.list_tokens(USER, sync=True)

    def reads(self) -> None:
        """Status queries and reads, with and without --json, and reads that fail."""
        self.cli(*self.later, Cli("order-show", ("order", "show", "CANARY_FIRST"), key="pem-file"),
                 Cli("status-json", ("status", "--json")),
                 Cli("order-show-missing-json", ("order", "show", "CANARY_NOPE", "--json"), ok=False))

    def finish(self) -> None:
        """Settle whatever the gateway still holds open, so that everything ends in a final state."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for order in self.c.sim.orders():
                if order["status"] == "PENDING":
                    self.c.sim.complete_order(str(order["outTradeNo"]), "FAILED")
                for refund in order.get("refunds", []):
                    if refund["status"] == "REFUND_PENDING":
                        self.c.sim.complete_refund(str(refund["outRefundNo"]), "REFUND_SUCCESS")
            if all(v == 0 for v in self.c.status().values()):
                return
            time.sleep(0.5)


# -- the verdict -----------------------------------------------------------------------------


@dataclass
class Scan:
    scanner: Scanner
    hits: list[Hit] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, target: str, texts: Iterable[tuple[str, str]]) -> None:
        for where, text in texts:
            self.hits += self.scanner.scan(target, where, text)


def log_texts(log_dir: Path) -> list[tuple[str, str]]:
    return [(f"log {p.name}", p.read_text(errors="replace")) for p in sorted(log_dir.glob("*.log"))]


def scan_everything(scanner: Scanner, redis: Redis, log_dir: Path, bodies: dict[str, list[str]],
                    aof_dir: Path | None) -> Scan:
    """Logs, HTTP bodies (error answers; merchant events sent out), rq jobs, every Redis key, the AOF."""
    scan = Scan(scanner)
    logs = log_texts(log_dir)
    scan.add("logs", logs)
    for target, texts in bodies.items():
        scan.add(target, ((target, text) for text in texts))
    jobs, registries = job_texts(redis)
    scan.add("rq jobs", jobs)
    keys, kinds = redis_texts(redis)
    scan.add("redis", keys)
    aof, commands = aof_texts(aof_dir) if aof_dir else ([], 0)
    scan.add("aof", aof)
    scan.figures = {"log_files": len(logs), "bodies": {k: len(v) for k, v in bodies.items()},
                    "redis_keys": sum(kinds.values()), "redis_keys_by_type": dict(kinds), "rq": dict(registries),
                    "aof_commands": commands, "bytes": dict(scanner.bytes)}
    return scan


def canaries_of(c: CanaryCluster) -> list[Canary]:
    request_signs, response_signs = c.gateway_relay.signs()
    notify_signs, _none = c.notify_relay.signs()
    assert request_signs and response_signs and notify_signs, "no sign value recorded: the relays saw nothing"
    minted = c.sim.http.get("/tokens").json()["tokens"]
    assert len(minted) >= 2, "the simulator minted fewer tokens than the paths need"
    signs = dict.fromkeys([*request_signs, *response_signs, *notify_signs])
    return [
        Canary("merchant key (Base64 DER)", c.merchant.private_key, windowed=True),
        Canary("merchant key (PEM)", c.pem, windowed=True),
        Canary("platform key", c.platform.private_key, windowed=True),
        Canary("webhook secret", c.webhook_secret, windowed=True),
        Canary("card number", CARD),
        *(Canary(f"token #{i}", str(t["paymentTokenID"])) for i, t in enumerate(minted)),
        *(Canary(f"sign #{i}", s, windowed=True) for i, s in enumerate(signs)),
    ]


def positive_control(scanner: Scanner, redis: Redis, scratch: Path, c: CanaryCluster, token: str,
                     sign: str) -> set[tuple[str, str]]:
    """Plant a sign fragment in a job-like zlib hash field, a token in a string key and a line of the PEM
    key in a log line; the same scan must find all three, and nothing else."""
    scratch.mkdir(parents=True, exist_ok=True)
    line = c.pem.splitlines()[5]
    (scratch / "planted.log").write_text(json.dumps({"event": "planted", "detail": line}) + "\n")
    redis.hset("canary:planted:job", "exc_info", zlib.compress(f"Traceback ... {sign[40:90]}".encode()))
    redis.set("canary:planted:token", f"id={token};")
    try:
        found = scan_everything(scanner, redis, scratch, {}, None).hits
    finally:
        redis.delete("canary:planted:job", "canary:planted:token")
    return {(h.where, h.how) for h in found if "planted" in h.where}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_canary_in_logs_error_bodies_rq_jobs_or_redis(own_redis: RedisServer, pg_url: str,
                                                         artifacts: Path) -> None:
    """Every path, errors included: 0 occurrences of any canary anywhere, and a planted one is found."""
    began = time.monotonic()
    cluster = CanaryCluster(root=artifacts, redis=own_redis, database_url=pg_url)
    paths = Paths(cluster)
    events: list[MutableMapping[str, Any]] = []
    try:
        cluster.start()
        with capture_logs(processors=PRODUCT_PROCESSORS) as events:
            paths.run()
            paths.finish()
        quiet = cluster.wait_quiet(timeout=60, final=True)
        assert quiet.reached, f"not quiet: {quiet.status}"
        canaries = canaries_of(cluster)
        bodies = {"error bodies": cluster.gateway_relay.error_bodies() + cluster.notify_relay.error_bodies(),
                  "merchant events": [d.body for d in cluster.sink.deliveries()]}
        statuses = Counter(e.status for e in cluster.notify_relay.exchanges + cluster.gateway_relay.exchanges)
    finally:
        cluster.stop()
        (cluster.sup.log_dir / "merchant-process.log").write_text(
            "\n".join(json.dumps(dict(e), default=str) for e in events))
    assert statuses[401] >= 4 and statuses[500] >= 2 and statuses[502] >= 1, f"a fault path did not run: {statuses}"
    assert bodies["merchant events"], "no merchant event was delivered"
    scanner = Scanner(canaries, public=[cluster.merchant.public_key, cluster.platform.public_key])
    scan = scan_everything(scanner, cluster.redis, cluster.sup.log_dir, bodies, own_redis.dir)
    assert scan.figures["rq"]["failed"] >= 1
    token = next(c.value for c in canaries if c.label.startswith("token"))
    sign = next(c.value for c in canaries if c.label.startswith("sign"))
    planted = positive_control(scanner, cluster.redis, artifacts / "scratch", cluster, token, sign)
    kinds = Counter(c.label.split(" #")[0].split(" (")[0] for c in canaries)
    figures = scan.figures
    note(f"secret canaries: {len(canaries)} canaries {dict(kinds)}; {sum(figures['bytes'].values()):,} bytes "
         f"scanned {figures['bytes']}; {figures['log_files']} log files, bodies {figures['bodies']}, "
         f"{figures['redis_keys']} Redis keys {figures['redis_keys_by_type']}, rq {figures['rq']}, "
         f"{figures['aof_commands']} AOF commands; {paths.cli_runs} CLI runs; hits {len(scan.hits)}; "
         f"positive control {len(planted)}/3; {time.monotonic() - began:.0f} s (steps {paths.seconds})")
    assert planted == {("log planted.log", "window"), ("redis hash canary:planted:job", "window"),
                       ("redis string canary:planted:token", "exact")}, f"positive control: {sorted(planted)}"
    leaks = sorted({(h.where, h.label.split(" #")[0], h.how) for h in scan.hits})
    assert not leaks, f"canaries found ({len(scan.hits)} hits): {leaks}; logs in {cluster.sup.log_dir}"
