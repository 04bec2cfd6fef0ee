"""The hello-world floor: an endpoint that does nothing, on the receiver's production server.

Why: the receiver's ingest rate only means something next to what the same server (uvicorn
with uvloop and httptools when installed, as many processes as the receiver, the ``web``
role's options) can do with no work at all, driven by the same load generator with the same
requests. The app reads the body, as the receiver does, and answers the receiver's ack.

Run as ``python -m worker.devtools.bench.hello --port P`` (a separate process, like ``web``).
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.gateway.wire import ACK_BODY
from worker.receiver.app import PAYMENT_PATH


async def _ack(request: Request) -> Response:
    await request.body()
    return Response(ACK_BODY, media_type="application/json")


async def _health(_request: Request) -> Response:
    return Response(b'{"store":"ok","redis":"ok"}', media_type="application/json")


def hello_app() -> Starlette:
    return Starlette(routes=[Route(PAYMENT_PATH, _ack, methods=["POST"]),
                             Route("/healthz", _health, methods=["GET"])])


def main(argv: list[str] | None = None) -> None:
    """Serve with the exact uvicorn options ``checus-worker web`` uses (see ``commands/roles.py``)."""
    import os

    import uvicorn

    from worker.config import Settings
    from worker.receiver.web import server_options

    parser = argparse.ArgumentParser(prog="python -m worker.devtools.bench.hello")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    options = server_options(settings)
    if settings.receiver_processes > 1:  # as many processes as the receiver, under the same supervisor
        options.update(http="worker.receiver.slow_clients:GuardedHttpToolsProtocol",
                       workers=settings.receiver_processes)
        uvicorn.run("worker.devtools.bench.hello:hello_app", factory=True, host=args.host, port=args.port,
                    log_level="warning", **options)
        return
    uvicorn.run(hello_app(), host=args.host, port=args.port, log_level="warning", **options)


if __name__ == "__main__":
    main()
