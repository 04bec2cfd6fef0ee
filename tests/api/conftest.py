"""A live merchant API on loopback over an EmbeddedStack (simulator, receiver, Redis, SQLite or PostgreSQL).

The API is the real ASGI app served by uvicorn on a thread; requests go over real HTTP with
httpx; payments reach the simulator over real HTTP; ``stack.settle`` runs the rq jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.reliability.simctl import SimControl
from worker.api.app import create_api
from worker.api.keys import create_key
from worker.devtools.demo.stack import EmbeddedStack
from worker.devtools.serving import ServedApp, serve_in_thread


@dataclass
class LiveApi:
    stack: EmbeddedStack
    served: ServedApp
    secret: str
    sim: SimControl
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.served.base_url

    def key(self, name: str, *, read_only: bool = False) -> str:
        return create_key(self.stack.rt.engine, name, read_only=read_only, now=self.stack.rt.clock())[1]

    def client(self, secret: str | None = None, *, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret or self.secret}"} if auth else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def state(self, out_trade_no: str) -> str | None:
        view = self.stack.service.get_order(out_trade_no)
        return view.order.state if view else None


def payment_body(no: str, **changes: Any) -> dict[str, Any]:
    return {"out_trade_no": no, "amount": "10.00", "currency": "USD", "user_id": "shopper1", "subject": "Socks",
            "return_url": "https://shop.test/return", **changes}


@pytest.fixture
def stack(redis_url: str, database_url: str) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(redis_url=redis_url, database_url=database_url, time_scale=0.01).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def live(stack: EmbeddedStack) -> Iterator[LiveApi]:
    served = serve_in_thread(create_api(stack.rt, feed_settle=0, idempotency_wait=10), name="api")
    secret = create_key(stack.rt.engine, "shop", read_only=False, now=stack.rt.clock())[1]
    api = LiveApi(stack=stack, served=served, secret=secret, sim=SimControl(stack.sim.base_url))
    try:
        yield api
    finally:
        for client in api.clients:
            client.close()
        api.sim.close()
        served.stop()
