"""The rig the receiver tests share (this module holds no tests; each test module builds its fixtures from it).

A ``Rig`` is the product's own receiver, served by uvicorn on loopback, in front of a real
``Runtime``: a real redis-server, a real SQLite or PostgreSQL store at the current migration,
and the product's JSON rq worker to drain jobs in this process. Notifications are built as
Checus sends them (WIRE.md §10/§13), serialized once with ``wire.dumps`` and signed with a
platform key generated at test time. ``snapshot()`` is everything a notification could change
(inbox, orders, audit, anomalies, outbox, tokens, rq jobs), so "no state effect" is one equality.
"""

from __future__ import annotations

import copy
import select
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.postgres import admin_url
from worker.bootstrap import install_runtime
from worker.config import Settings
from worker.devtools.serving import ServedApp, serve_in_thread
from worker.flows.payments import after_open, order_values
from worker.gateway.requests import HostedCardPayment
from worker.gateway.signing import PortalKeyPair, Signer
from worker.gateway.wire import dumps, format_time, format_utc
from worker.receiver.web import receiver_app
from worker.rqworker import build_worker
from worker.runtime import Runtime
from worker.runtime.queueing import make_queue
from worker.store import repo
from worker.store.db import create_engine, read, write
from worker.store.migrate import upgrade
from worker.store.records import OrderRecord
from worker.store.schema import anomalies, inbox, orders, outbox, payment_tokens, transitions

APP_ID = "RX_APP"
MERCHANT_NO = "RX_MERCHANT"
PAYMENT = "/checus/notify/payment"
REFUND = "/checus/notify/refund"
ACK = b'{"code":"SUCCESS","msg":"Success"}'
TOKEN = "PMTOKEN20230710080439571142400031000"  # the shape of a real paymentTokenID (WIRE.md §10)


class CountingRedis(Redis):
    """A real redis-py client that also records the name of every command it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py: untyped


class BodyMeter:
    """ASGI wrapper: the size of every body chunk the receiver pulled from the server, per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.chunks: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith("/checus/"):
            await self.app(scope, receive, send)
            return
        self.chunks = []

        async def metered() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.chunks.append(len(message.get("body", b"")))
            return message

        await self.app(scope, metered, send)

    @property
    def total(self) -> int:
        return sum(self.chunks)


# -- notifications as Checus sends them ------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


COMPLETED = format_utc(now())  # when "the payment completed": the same on every retry of one fact


def payment_note(out_trade_no: str = "RX_ORDER_1", *, status: str = "SUCCESS", amount: object = Decimal("100.00"),
                 currency: str = "USD", notify_time: datetime | None = None, token: str | None = None,
                 app_id: str = APP_ID, merchant_no: str = MERCHANT_NO, notify_type: str = "PAYMENT",
                 ) -> dict[str, Any]:
    """A payment notification body (WIRE.md §10), as a dict to serialize with ``wire.dumps``."""
    details = [{"paymentMethodType": "CARD", "paymentTokenID": token,
                "cardInfo": {"cardOrg": "VISA", "cardIdentifierNo": "411111******1111"}}] if token else []
    return {
        "code": "APPLY_SUCCESS" if status == "SUCCESS" else "PAYMENT_FAILED", "msg": "", "keyVersion": "1",
        "appId": app_id, "merchantNo": merchant_no, "notifyTime": format_time(notify_time or now()),
        "notifyType": notify_type,
        "data": {"outTradeNo": out_trade_no, "tradeToken": f"T{out_trade_no}", "totalAmount": amount,
                 "currency": currency, "country": "US", "status": status, "completeTime": COMPLETED,
                 "paymentDetails": details, "reference": "REF-1"},
    }


def refund_note(out_refund_no: str = "RX_REFUND_1", *, out_trade_no: str = "RX_ORDER_1",
                status: str = "REFUND_SUCCESS", amount: object = Decimal("10.00"), currency: str = "USD",
                notify_time: datetime | None = None) -> dict[str, Any]:
    """A refund notification body (WIRE.md §13)."""
    return {
        "code": "APPLY_SUCCESS", "msg": "Success.", "keyVersion": "1", "appId": APP_ID, "merchantNo": MERCHANT_NO,
        "notifyTime": format_time(notify_time or now()), "notifyType": "REFUND",
        "data": {"outRefundNo": out_refund_no, "refundTradeNo": f"T{out_refund_no}", "outTradeNo": out_trade_no,
                 "refundAmount": amount, "refundCurrency": currency, "status": status,
                 "refundFinishTime": COMPLETED},
    }


def without(note: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A deep copy of ``note`` with the dotted ``paths`` (e.g. ``data.status``) removed."""
    result = copy.deepcopy(note)
    for path in paths:
        *parents, last = path.split(".")
        target = result
        for part in parents:
            target = target[part]
        del target[last]
    return result


def signer_of(pair: PortalKeyPair) -> Signer:
    return Signer.from_value(pair.private_key, setting="test key")


# -- the rig ------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Rig:
    rt: Runtime
    served: ServedApp
    meter: BodyMeter
    signer: Signer  # the platform's private key: what Checus signs with
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=15.0))

    @property
    def redis(self) -> CountingRedis:
        assert isinstance(self.rt.redis, CountingRedis)
        return self.rt.redis

    def url(self, path: str) -> str:
        return self.served.base_url + path

    def post(self, body: bytes, *, sign: str | None, path: str = PAYMENT, content_type: str | None = "application/json",
             headers: dict[str, str] | None = None) -> httpx.Response:
        """POST exact bytes with exactly this ``sign`` header (None: no header)."""
        sent = dict(headers or {})
        if content_type is not None:
            sent["content-type"] = content_type
        if sign is not None:
            sent["sign"] = sign
        return self.http.post(self.url(path), content=body, headers=sent)

    def signed(self, note: dict[str, Any], signer: Signer | None = None) -> tuple[bytes, str]:
        raw = dumps(note)
        return raw, (signer or self.signer).sign(raw)

    def deliver(self, note: dict[str, Any], *, path: str = PAYMENT, signer: Signer | None = None) -> httpx.Response:
        """Serialize once, sign those bytes, send those bytes."""
        raw, sign = self.signed(note, signer)
        return self.post(raw, sign=sign, path=path)

    def drain(self) -> None:
        """Run every queued job with the product's JSON worker, in this process.

        The worker does not subscribe to rq's command channel: a burst run has no use for it, and
        joining its listener thread on exit costs up to a second per drain."""
        worker = build_worker(self.rt)
        worker.subscribe = lambda: None  # type: ignore[method-assign]
        worker.work(burst=True, logging_level="WARNING")

    def queued(self) -> int:
        return int(make_queue(self.rt.redis).count)

    def jobs(self) -> list[str]:
        """Every rq job hash in Redis, whatever its state."""
        return sorted(k.decode() for k in self.rt.redis.scan_iter("rq:job:*"))

    def inbox_rows(self) -> list[Any]:
        with read(self.rt.engine) as conn:
            return list(conn.execute(sa.select(inbox).order_by(inbox.c.id)))

    def order(self, out_trade_no: str) -> OrderRecord:
        with read(self.rt.engine) as conn:
            found = repo.find_order(conn, out_trade_no)
        assert found is not None
        return found

    def rows(self, table: sa.Table) -> list[Any]:
        with read(self.rt.engine) as conn:
            return list(conn.execute(sa.select(table).order_by(table.c.id)))

    def create_order(self, out_trade_no: str = "RX_ORDER_1", amount: str = "100.00", currency: str = "USD",
                     *, save_card: bool = False) -> int:
        """A stored order (CREATED, version 1), as the payment API inserts it before it claims the send;
        notifications that were waiting for it are matched again, as the API does."""
        request = HostedCardPayment(out_trade_no=out_trade_no, subject="Receiver test", amount=Decimal(amount),
                                    currency=currency, user_id="u1", front_callback_url="https://shop.test/return",
                                    token_for_future_use=save_card)
        with write(self.rt.engine) as conn:
            order_id = repo.insert_order(conn, order_values(self.rt, request, None))
        after_open(self.rt, out_trade_no)
        return order_id

    def snapshot(self) -> dict[str, Any]:
        """Everything a notification can change."""
        with read(self.rt.engine) as conn:
            counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                      for t in (inbox, transitions, anomalies, outbox, payment_tokens)}
            states = sorted((r.out_trade_no, r.state, r.version) for r in conn.execute(sa.select(orders)))
        return {**counts, "orders": states, "rq_jobs": self.jobs(), "queued": self.queued()}


def settings_for(*, redis_url: str, database_url: str, trusted: Iterable[PortalKeyPair]) -> Settings:
    return Settings.from_env({
        "CHECUS_APP_ID": APP_ID, "CHECUS_MERCHANT_NO": MERCHANT_NO, "REDIS_URL": redis_url,
        "DATABASE_URL": database_url, "CHECUS_PLATFORM_PUBLIC_KEYS": ",".join(k.public_key for k in trusted),
    })


@contextmanager
def open_rig(*, redis_url: str, database_url: str, platform: PortalKeyPair,
             trusted: Iterable[PortalKeyPair] | None = None) -> Iterator[Rig]:
    """The receiver on loopback over a fresh store; ``trusted`` are the platform keys it accepts."""
    settings = settings_for(redis_url=redis_url, database_url=database_url, trusted=trusted or (platform,))
    engine = create_engine(database_url)
    upgrade(engine)
    rt = Runtime(settings=settings, engine=engine, redis=CountingRedis.from_url(redis_url))
    install_runtime(rt)  # jobs look the runtime up by process, as in a worker
    meter = BodyMeter(receiver_app(rt))
    served = serve_in_thread(meter, name="receiver-under-test")
    rig = Rig(rt=rt, served=served, meter=meter, signer=signer_of(platform))
    try:
        yield rig
    finally:
        rig.http.close()
        served.stop()
        install_runtime(None)
        engine.dispose()


@contextmanager
def store_down(rig: Rig) -> Iterator[None]:
    """Make the rig's store refuse every new connection, then bring it back."""
    engine = rig.rt.engine
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        away = path.parent / "away"
        away.mkdir()
        engine.dispose()
        for file in path.parent.glob(path.name + "*"):
            shutil.move(file, away / file.name)
        path.mkdir()  # "unable to open database file"
        try:
            yield
        finally:
            path.rmdir()
            for file in away.iterdir():
                shutil.move(file, path.parent / file.name)
        return
    name = engine.url.database
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


# -- raw HTTP/1.1, for what a well-behaved client library refuses to send -----------------------------------


def raw_exchange(base_url: str, head: bytes, body_parts: Iterable[bytes], *, timeout: float = 5.0
                 ) -> tuple[bytes, int]:
    """Send a request head and body parts on one connection, stopping when the server answers or hangs up.

    Returns (everything the server sent, body bytes the server let us send)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    sent, received = 0, b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
                sent += len(part)
                if _readable(sock):
                    break
        except OSError:  # the server closed the connection: it will not read the rest
            pass
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
    return received, sent


def _readable(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


def statuses(raw_response: bytes) -> list[int]:
    """The status codes of every HTTP/1.1 response in a raw byte stream."""
    return [int(line.split()[1]) for line in raw_response.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
