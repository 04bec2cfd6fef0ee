"""The simulator as one ASGI application: gateway endpoints, cashier pages, control API.

``create_app`` is what the CLI and tests serve. The application owns one ``Runtime``; its
lifespan starts the scheduler and the notifier's HTTP client on the serving loop and stops
them (cancelling deliveries in flight) on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from worker.simulator import cashier, control, gateway
from worker.simulator.config import SimulatorConfig
from worker.simulator.runtime import Runtime


def build_app(config: SimulatorConfig) -> tuple[Starlette, Runtime]:
    """The app and its runtime (whose ``state`` tests read directly)."""
    runtime = Runtime(config)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(routes=[*gateway.routes(), *cashier.routes(), *control.routes()], lifespan=lifespan)
    app.state.runtime = runtime
    return app, runtime


def create_app(config: SimulatorConfig) -> Starlette:
    return build_app(config)[0]
