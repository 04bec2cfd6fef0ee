"""The read-only ops page, served by the receiver when ``CHECUS_OPS_TOKEN`` is set.

``/ops``: payments and refunds by state, stuck ones, open anomalies. ``/ops/orders/{no}``: one
order's timeline, every transition with its source and evidence, and its refunds. The token
is checked in constant time; it may come as ``Authorization: Bearer …``, or once as
``?token=…`` (then kept in an HttpOnly cookie). Nothing here writes.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.ops import queries
from worker.ops.status import snapshot
from worker.runtime import Runtime
from worker.service import PaymentService
from worker.store.db import read

COOKIE = "checus_ops"
_templates = Environment(loader=PackageLoader("worker.ops", "templates"), autoescape=select_autoescape(["html"]))


def _age(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_templates.filters["age"] = _age
_templates.filters["hms"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S") if isinstance(moment, datetime) else ""


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def guarded(token: str, view: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        offered = request.query_params.get("token")
        if offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
            response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(COOKIE, offered, httponly=True, samesite="strict", path="/ops")
            return response
        if not _authorized(request, token):
            return HTMLResponse("<h1>401</h1><p>The ops page needs its token.</p>", status_code=401)
        return await view(request)

    return endpoint


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**context),
                        headers={"cache-control": "no-store", "x-frame-options": "DENY"})


def ops_routes(rt: Runtime, token: str) -> list[Route]:
    service = PaymentService(rt)

    def overview_data() -> dict[str, Any]:
        now = rt.clock()
        with read(rt.engine) as conn:
            data = {"counts": queries.counts_by_state(conn),
                    "stuck": queries.stuck(conn, now=now, limits=queries.stuck_limits(rt.settings.stuck_after)),
                    "anomalies": queries.list_anomalies(conn)}
        return {**data, "system": snapshot(rt), "now": now}

    async def overview(_request: Request) -> Response:
        return _render("overview.html", **await run_in_threadpool(overview_data))

    def order_data(out_trade_no: str) -> dict[str, Any] | None:
        view = service.get_order(out_trade_no)
        if view is None:
            return None
        with read(rt.engine) as conn:
            related = queries.list_anomalies(conn, include_resolved=True, ref=out_trade_no)
        return {"view": view, "anomalies": related, "now": rt.clock()}

    async def order(request: Request) -> Response:
        data = await run_in_threadpool(order_data, request.path_params["out_trade_no"])
        if data is None:
            return HTMLResponse("<h1>404</h1><p>No such order.</p>", status_code=404)
        return _render("order.html", **data)

    return [Route("/ops", guarded(token, overview), methods=["GET"]),
            Route("/ops/orders/{out_trade_no}", guarded(token, order), methods=["GET"])]
