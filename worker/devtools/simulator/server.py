"""Serving the simulator: blocking for the CLI, or on a daemon thread for tests and the demo."""

from __future__ import annotations

import uvicorn

from worker.devtools.serving import ServedApp, serve_in_thread, uvicorn_config
from worker.devtools.simulator.app import build_app, create_app
from worker.devtools.simulator.config import SimulatorConfig
from worker.devtools.simulator.runtime import SimulatorRuntime
from worker.devtools.simulator.state import SimulatorState


class RunningSimulator:
    """A simulator on a background thread: its ``base_url``, its ``state``, and ``stop()``."""

    def __init__(self, *, served: ServedApp, runtime: SimulatorRuntime) -> None:
        self.base_url = served.base_url
        self.runtime = runtime
        self.state: SimulatorState = runtime.state
        self.config: SimulatorConfig = runtime.config
        self._served = served

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (deliveries in flight are cancelled) and wait for the thread to end."""
        self._served.stop(timeout)

    def __repr__(self) -> str:
        return f"RunningSimulator(base_url={self.base_url!r})"


def start_background(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 0) -> RunningSimulator:
    """Serve on a daemon thread; return once the simulator is serving."""
    app, runtime = build_app(config)
    return RunningSimulator(served=serve_in_thread(app, host=host, port=port, name="checus-sim"), runtime=runtime)


def serve(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground until interrupted (``checus-worker sim``)."""
    uvicorn.Server(uvicorn_config(create_app(config), host=host, port=port)).run()
