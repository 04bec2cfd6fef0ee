"""Serving an ASGI app with uvicorn: on a daemon thread (tests, the demo, the simulator) or in front.

The listening socket is bound here (port 0 = any free port), so the port is known before
uvicorn starts and nothing can take it in between; ``serve_in_thread`` returns once uvicorn
reports it is serving (its lifespan ran and the socket listens).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

import uvicorn

STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 2


class ThreadServer(uvicorn.Server):
    """uvicorn, told to stop through an event instead of noticing a flag on its 0.1 s tick.

    Tests start and stop a simulator per test; the tick alone would add a tenth of a second
    to each of them.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._stop_requested = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), timeout=0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, polling every 5 ms where uvicorn sleeps a fixed 0.1 s.

        Same steps: stop listening, ask each connection to close once its response is out,
        wait (at most ``timeout_graceful_shutdown``) and cancel what is left, then run the
        app's lifespan shutdown. Falls back to uvicorn's own if its internals change shape.
        """
        if not all(hasattr(self, name) for name in ("servers", "server_state", "lifespan")):
            await super().shutdown(sockets=sockets)
            return
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await self._drain(self.config.timeout_graceful_shutdown or SHUTDOWN_GRACE_SECONDS)
        await self.lifespan.shutdown()

    async def _drain(self, limit: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        state = self.server_state
        while (state.connections or state.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for task in list(state.tasks):
            task.cancel()

    def request_stop(self) -> None:
        self.should_exit = True
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(event.set)


class ServedApp:
    """An app on a background thread: its ``base_url`` and ``stop()``."""

    def __init__(self, *, base_url: str, server: ThreadServer, thread: threading.Thread) -> None:
        self.base_url = base_url
        self._server = server
        self._thread = thread

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (requests in flight get the grace period) and wait for the thread to end."""
        self._server.request_stop()
        self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"ServedApp(base_url={self.base_url!r})"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                          timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, **options)


def serve_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0, name: str = "asgi") -> ServedApp:
    """Serve on a daemon thread; return once uvicorn is serving."""
    sock = bind(host, port)
    server = ThreadServer(uvicorn_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    served = ServedApp(base_url=base_url(host, sock.getsockname()[1]), server=server, thread=thread)
    try:
        wait_until_up(server, thread)
    except BaseException:
        served.stop()
        raise
    return served


def wait_until_up(server: uvicorn.Server, thread: threading.Thread) -> None:
    """uvicorn sets ``started`` once the app's lifespan ran and the socket listens."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the {thread.name} thread exited during startup")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{thread.name} did not start within {STARTUP_TIMEOUT_SECONDS} s")
        time.sleep(0.002)
