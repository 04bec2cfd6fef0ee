"""The simulator as one ASGI application: gateway endpoints, cashier pages, control API.

``create_app`` is what the CLI and tests serve. The application owns one ``SimulatorRuntime``; its
lifespan starts the scheduler and the notifier's HTTP client on the serving loop and stops
them (cancelling deliveries in flight) on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from worker.devtools.simulator import cashier, control, gateway
from worker.devtools.simulator.config import SimulatorConfig
from worker.devtools.simulator.runtime import SimulatorRuntime


def build_app(config: SimulatorConfig) -> tuple[Starlette, SimulatorRuntime]:
    """The app and its runtime (whose ``state`` tests read directly)."""
    runtime = SimulatorRuntime(config)

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
