"""Serving an ASGI app with uvicorn on a daemon thread (tests, the demo, the simulator).

The listening socket is bound here (port 0 = any free port) so the port is known before
uvicorn starts and nothing can take it in between; ``serve_in_thread`` returns once the app
answers its health path.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 2


class ServedApp:
    """An app on a background thread: its ``base_url`` and ``stop()``."""

    def __init__(self, *, base_url: str, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.base_url = base_url
        self._server = server
        self._thread = thread

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
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


def serve_in_thread(app: Any, *, health_path: str, host: str = "127.0.0.1", port: int = 0,
                    name: str = "asgi") -> ServedApp:
    """Serve on a daemon thread; return once ``health_path`` answers 200."""
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    served = ServedApp(base_url=base_url(host, sock.getsockname()[1]), server=server, thread=thread)
    try:
        wait_until_up(served.base_url + health_path, thread)
    except BaseException:
        served.stop()
        raise
    return served


def wait_until_up(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the server thread exited during startup ({url})")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {STARTUP_TIMEOUT_SECONDS} s")
