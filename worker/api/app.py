"""The API's ASGI application (FastAPI) and its process: problem+json everywhere, one log line per request.

FastAPI over the Starlette the receiver already uses: its routes are typed functions whose
pydantic models both validate the request and generate the OpenAPI 3.1 document
(``/v1/openapi.json``, rendered at ``/v1/docs``), so the document is what the server does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException

from worker.api.context import Api, problem_answer, to_response
from worker.api.feed import Feed
from worker.api.idempotency import Idempotency
from worker.api.problems import KINDS, ApiProblem, body
from worker.api.routes import router
from worker.runtime import Runtime
from worker.service import PaymentService

log = structlog.get_logger("worker.api")
REQUESTS = Counter("checus_api_requests_total", "Merchant API requests answered", ["route", "status"])
LATENCY = Histogram("checus_api_request_seconds", "Merchant API request duration", ["route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

DESCRIPTION = """Payments, refunds, saved cards and merchant events of a Checus merchant, over HTTP.

Authenticate with `Authorization: Bearer <key>` (`checus-worker api-keys create NAME`). Send an
`Idempotency-Key` with every POST: the same key and body replay the first answer. Amounts are
decimal strings with the currency's exponent. Errors are RFC 9457 problem details with a stable
`type`. A create answered 202 is being resolved: read the record later, never retry it under a
new number."""


def create_api(rt: Runtime, *, feed_settle: float = 2.0, idempotency_wait: float = 5.0) -> FastAPI:
    app = FastAPI(title="Checus payment worker — merchant API", version="1", description=DESCRIPTION,
                  openapi_url="/v1/openapi.json", docs_url="/v1/docs", redoc_url=None)
    app.state.api = Api(rt=rt, service=PaymentService(rt),
                        idempotency=Idempotency(engine=rt.engine, clock=rt.clock, wait=idempotency_wait),
                        feed=Feed(engine=rt.engine, clock=rt.clock, settle=timedelta(seconds=feed_settle),
                                  ack_reads=not rt.event_sinks))
    app.include_router(router)
    _handlers(app)
    app.middleware("http")(_observe)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _handlers(app: FastAPI) -> None:
    async def problem(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return to_response(problem_answer(exc), exc.headers)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{"pointer": _pointer(e.get("loc", ())), "code": str(e.get("type", "")),
                   "message": str(e.get("msg", "")).removeprefix("Value error, ")}
                  for e in exc.errors()]  # never the input: it may be a card number
        kind = KINDS["validation-failed"]
        return _problem(kind.status, body(kind, "the request does not match the schema", errors=errors))

    async def http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "invalid-request")
        kind = KINDS[slug]
        detail = "no such resource" if slug == "not-found" else str(exc.detail)
        return _problem(exc.status_code, {**body(kind, detail), "status": exc.status_code},
                        dict(exc.headers) if exc.headers else None)

    async def internal(_request: Request, exc: Exception) -> Response:
        log.error("api.internal_error", error=type(exc).__name__)
        return _problem(500, body(KINDS["internal"], "an internal error; nothing is reported about it here"))

    app.add_exception_handler(ApiProblem, problem)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, internal)


def _problem(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    import simplejson

    from worker.api.problems import MEDIA_TYPE

    text = simplejson.dumps(content, separators=(",", ":"))
    return Response(text, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _pointer(loc: Any) -> str:
    """``("body", "amount")`` → ``/amount``; a header or query parameter → ``header/idempotency-key``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        return "/" + "/".join(parts[1:])
    return "/".join(parts)


async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """One canonical log line and the metrics per request (never the Authorization header)."""
    started = time.perf_counter()
    response = await call_next(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    seconds = time.perf_counter() - started
    REQUESTS.labels(route, str(response.status_code)).inc()
    LATENCY.labels(route).observe(seconds)
    log.info("api.request", method=request.method, route=route, status=response.status_code,
             key=getattr(request.state, "api_key", None), ms=round(seconds * 1000, 1),
             idempotent_replay=response.headers.get("Idempotent-Replayed") == "true")
    return response


def serve_api(rt: Runtime, *, host: str, port: int) -> None:
    """Serve until stopped (``checus-worker api``): one process; route handlers run on its thread pool."""
    import uvicorn

    from worker.ops.gauges import start_metrics

    start_metrics(rt, role="api", store=False)
    uvicorn.run(create_api(rt), host=host, port=port, log_config=None, access_log=False, timeout_keep_alive=5)
