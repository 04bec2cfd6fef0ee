"""The control API under ``/__sim/``: drive outcomes, read the truth, bend time, inject faults.

JSON in and out, unauthenticated: it is for loopback use by tests and developers, and the
gateway endpoints never depend on it. Problems answer 400 (bad input), 404 (unknown key) or
409 (wrong state) with ``{"error": "..."}``. Amounts leave as JSON numbers.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.devtools.simulator import outcomes, refunds, views
from worker.devtools.simulator.faults import FaultPlan, FaultSpecError
from worker.devtools.simulator.outcomes import Completion
from worker.devtools.simulator.records import OrderStatus, Refund, RefundStatus, TokenStatus
from worker.devtools.simulator.runtime import SimulatorRuntime
from worker.gateway.wire import WireFormatError, dumps, format_utc, loads_object

PREFIX = "/__sim"
ORDER_ENDINGS = {s.value: s for s in (OrderStatus.SUCCESS, OrderStatus.FAILED, OrderStatus.CLOSED)}
REFUND_ENDINGS = {s.value: s for s in (RefundStatus.REFUND_SUCCESS, RefundStatus.REFUND_FAILED)}


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return loads_object(raw)
    except WireFormatError as exc:
        raise ControlError(400, str(exc)) from None


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ControlError(400, f"{name} must be true or false")
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ControlError(400, f"{name} must be a string")
    return value


def _runtime(request: Request) -> SimulatorRuntime:
    runtime: SimulatorRuntime = request.app.state.runtime
    return runtime


def _order_view(rt: SimulatorRuntime, out_trade_no: str) -> dict[str, Any]:
    order = rt.state.order(out_trade_no)
    if order is None:
        raise ControlError(404, "unknown outTradeNo")
    return views.order_truth(order, rt.state.refunds_of(order.out_trade_no))


async def get_order(request: Request) -> Response:
    return _json(_order_view(_runtime(request), request.path_params["key"]))


async def list_orders(request: Request) -> Response:
    rt = _runtime(request)
    return _json({"orders": [views.order_truth(o, rt.state.refunds_of(o.out_trade_no)) for o in rt.state.orders()]})


async def complete_order(request: Request) -> Response:
    """Body: {"status": SUCCESS|FAILED|CLOSED, "code"?, "msg"?, "notify": true,
    "token_consent": true, "three_ds": false, "force": false}."""
    rt, body = _runtime(request), await _body(request)
    order = rt.state.order(request.path_params["key"])
    if order is None:
        raise ControlError(404, "unknown outTradeNo")
    status = ORDER_ENDINGS.get(str(body.get("status")))
    if status is None:
        raise ControlError(400, "status must be SUCCESS, FAILED or CLOSED")
    if order.terminal and not _bool(body, "force", False):
        raise ControlError(409, f"order is already {order.status}")
    how = Completion(
        status=status,
        code=_text(body, "code"),
        msg=_text(body, "msg"),
        notify=_bool(body, "notify", True),
        token_consent=_bool(body, "token_consent", True),
        three_ds=_bool(body, "three_ds", False),
    )
    outcomes.complete(rt, order, how)
    return _json(_order_view(rt, order.out_trade_no))


def _refund_or_404(rt: SimulatorRuntime, out_refund_no: str) -> Refund:
    found = rt.state.refund(out_refund_no)
    if found is None:
        raise ControlError(404, "unknown outRefundNo")
    return found


async def get_refund(request: Request) -> Response:
    return _json(views.refund_truth(_refund_or_404(_runtime(request), request.path_params["key"])))


async def complete_refund(request: Request) -> Response:
    """Body: {"status": REFUND_SUCCESS|REFUND_FAILED (default: by the comments trigger),
    "msg"?, "notify": true, "force": false}."""
    rt, body = _runtime(request), await _body(request)
    pending = _refund_or_404(rt, request.path_params["key"])
    raw_status = body.get("status")
    status = refunds.default_outcome(pending) if raw_status is None else REFUND_ENDINGS.get(str(raw_status))
    if status is None:
        raise ControlError(400, "status must be REFUND_SUCCESS or REFUND_FAILED")
    if pending.terminal and not _bool(body, "force", False):
        raise ControlError(409, f"refund is already {pending.status}")
    done = refunds.complete(rt, pending, status, msg=_text(body, "msg"), notify=_bool(body, "notify", True))
    return _json(views.refund_truth(done))


async def notifications(request: Request) -> Response:
    rt = _runtime(request)
    key, kind = request.query_params.get("key"), request.query_params.get("kind")
    attempts = [
        {
            "id": a.id,
            "notificationId": a.notification_id,
            "kind": a.kind,
            "key": a.key,
            "attempt": a.attempt,
            "source": a.source,
            "url": a.url,
            "sentAt": format_utc(a.sent_at),
            "httpStatus": a.http_status,
            "error": a.error,
            "acked": a.acked,
            "bodySha256": a.body_sha256,
            "signatureValid": a.signature_valid,
        }
        for a in rt.state.attempts(key=key, kind=kind)
    ]
    dropped = [d for d in rt.state.dropped() if key is None or d["key"] == key]
    return _json({"attempts": attempts, "dropped": dropped})


async def resend(request: Request) -> Response:
    """Body: {"key": outTradeNo|outRefundNo, "copies": 1}."""
    rt, body = _runtime(request), await _body(request)
    key, copies = _text(body, "key"), body.get("copies", 1)
    if not key or isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 100:
        raise ControlError(400, "key is required and copies must be 1..100")
    if not rt.notifier.resend(key, copies):
        raise ControlError(404, "no notification was sent for that key")
    return _json({"key": key, "copies": copies})


async def list_tokens(request: Request) -> Response:
    rt = _runtime(request)
    now = rt.clock.now()
    user_id = request.query_params.get("userId")
    return _json({"tokens": [views.token_truth(t, now) for t in rt.state.tokens(user_id)]})


async def expire_token(request: Request) -> Response:
    rt = _runtime(request)
    token = rt.state.token(request.path_params["token_id"])
    if token is None:
        raise ControlError(404, "unknown paymentTokenID")
    if token.status is TokenStatus.ACTIVATED:
        token = replace(token, status=TokenStatus.EXPIRED)
        rt.state.put_token(token)
    return _json(views.token_truth(token, rt.clock.now()))


async def ledger(request: Request) -> Response:
    return _json(_runtime(request).state.ledger())


async def clock(request: Request) -> Response:
    rt = _runtime(request)
    return _json({"now": format_utc(rt.clock.now()), "offsetSeconds": rt.clock.offset_seconds})


async def advance_clock(request: Request) -> Response:
    """Body: {"seconds": n}. Runs expiry, auto-completions and due retries before answering."""
    rt, body = _runtime(request), await _body(request)
    seconds = body.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | Decimal):
        raise ControlError(400, "seconds must be a number")
    if seconds < 0:
        raise ControlError(400, "the virtual clock only moves forward")
    rt.advance(float(seconds))
    return await clock(request)


async def get_faults(request: Request) -> Response:
    return _json(_runtime(request).faults.to_json())


async def put_faults(request: Request) -> Response:
    rt, body = _runtime(request), await _body(request)
    try:
        plan = FaultPlan.from_json(body)
    except FaultSpecError as exc:
        raise ControlError(400, str(exc)) from None
    rt.set_faults(plan)
    return _json(plan.to_json())


async def delete_faults(request: Request) -> Response:
    rt = _runtime(request)
    rt.set_faults(FaultPlan())
    return _json(rt.faults.to_json())


async def reset(request: Request) -> Response:
    await _runtime(request).reset()
    return _json({"reset": True})


async def health(request: Request) -> Response:
    return _json({"ok": True})


def _guarded(endpoint: Any) -> Any:
    async def run(request: Request) -> Response:
        try:
            response: Response = await endpoint(request)
        except ControlError as exc:
            return _json({"error": str(exc)}, exc.status)
        return response

    run.__name__ = endpoint.__name__
    return run


def routes() -> list[Route]:
    table: list[tuple[str, Any, str]] = [
        ("/health", health, "GET"),
        ("/orders", list_orders, "GET"),
        ("/orders/{key}", get_order, "GET"),
        ("/orders/{key}/complete", complete_order, "POST"),
        ("/refunds/{key}", get_refund, "GET"),
        ("/refunds/{key}/complete", complete_refund, "POST"),
        ("/notifications", notifications, "GET"),
        ("/notifications/resend", resend, "POST"),
        ("/tokens", list_tokens, "GET"),
        ("/tokens/{token_id}/expire", expire_token, "POST"),
        ("/ledger", ledger, "GET"),
        ("/clock", clock, "GET"),
        ("/clock/advance", advance_clock, "POST"),
        ("/faults", get_faults, "GET"),
        ("/faults", put_faults, "PUT"),
        ("/faults", delete_faults, "DELETE"),
        ("/reset", reset, "POST"),
    ]
    return [Route(PREFIX + path, _guarded(fn), methods=[method]) for path, fn, method in table]
