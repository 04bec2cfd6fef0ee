"""The embedded stack for end-to-end tests: simulator → receiver → rq (in-process drain) → store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker.devtools.demo.stack import EmbeddedStack


class Events:
    """A merchant event consumer that records what it was given."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.received.append(event)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == type_]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def stack(redis_url: str, database_url: str, events: Events) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(redis_url=redis_url, database_url=database_url, time_scale=0.01,
                      event_sinks=(events,)).start()
    try:
        yield s
    finally:
        s.stop()


def sim_control(stack: EmbeddedStack, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{stack.sim.base_url}/__sim{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def cashier(url: str, action: str, *, save_card: bool = True) -> int:
    data = {"action": action, **({"save_card": "on"} if save_card else {})}
    return httpx.post(url, data=data, timeout=10).status_code
