"""The gateway's HTTP face: ``POST /aggregate-pay/api/gateway/{endpoint}``.

One function per request, in this order: count the call, draw the endpoint's faults, add
latency, read the raw body; an injected error answers without touching state; otherwise the
envelope is opened (signature first, on the raw bytes) and the endpoint's handler runs; then
a drop closes the connection without an answer, a timeout holds the answer back, a no-code
fault swaps the reply for a body without a ``code``, and the reply is serialized once, signed
and sent with HTTP 200.

Dropping needs the connection's transport, which ASGI does not expose; uvicorn's receive
callable is a bound method of an object that holds it, and that is what ``_drop`` uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from worker.devtools.simulator import payments, refunds, tokens
from worker.devtools.simulator.envelope import MESSAGES, Rejected, Reply, open_envelope, seal
from worker.devtools.simulator.faults import EndpointDecision, EndpointFault, decide
from worker.devtools.simulator.repeats import Call
from worker.devtools.simulator.runtime import SimulatorRuntime

log = structlog.get_logger("worker.devtools.simulator")
GATEWAY_PREFIX = "/aggregate-pay/api/gateway"
Handler = Callable[[SimulatorRuntime, dict[str, Any], Call], Reply]
HANDLERS: dict[str, Handler] = {
    "orderAndPay": payments.order_and_pay,
    "orderQuery": payments.order_query,
    "refund": refunds.refund,
    "refundQuery": refunds.refund_query,
    "inquirePaymentToken": tokens.inquire,
    "removePaymentToken": tokens.remove,
}


async def gateway_endpoint(request: Request) -> Response:
    rt: SimulatorRuntime = request.app.state.runtime
    name = request.path_params["endpoint"]
    if name not in HANDLERS:
        return PlainTextResponse("Not Found", status_code=404)
    rt.state.count_call(name)
    fault = rt.faults.endpoint(name)
    decision = decide(fault, rt.fault_rng, rt.faults.repeat_answer)
    if fault.delay_seconds:
        await asyncio.sleep(fault.delay_seconds)
    raw = await request.body()
    if decision.error:
        return _injected_error(rt, name, fault)
    if decision.drop and not fault.drop_applies_effect:
        return await _drop(request, rt, name)
    reply = handle(rt, name, raw, request, decision)
    rt.state.count_code(name, reply.code)
    log.info(
        "sim.request",
        endpoint=name,
        code=reply.code,
        dropped=decision.drop,
        late=decision.timeout,
        no_code=decision.no_code is not None and not decision.drop,
    )
    if decision.drop:
        return await _drop(request, rt, name)
    if decision.timeout:
        await asyncio.sleep(fault.timeout_seconds)
    answer = reply.body()
    if decision.no_code is not None:  # the request took effect; the client cannot read that it did
        rt.state.count_code(name, "no_code")
        answer = dict(decision.no_code)
    body, headers = seal(answer, rt.signer, unsigned=fault.unsigned, spoil=fault.bad_signature)
    return Response(body, status_code=200, headers=headers)


def handle(rt: SimulatorRuntime, name: str, raw: bytes, request: Request, decision: EndpointDecision) -> Reply:
    """Open the envelope and run the endpoint; every refusal becomes a reply."""
    try:
        data = open_envelope(
            name,
            raw,
            sign=request.headers.get("sign"),
            content_type=request.headers.get("content-type"),
            verifier=rt.verifier,
            rules=rt.rules,
            now=rt.clock.now(),
        )
        call = Call(base_url=str(request.base_url).rstrip("/"), repeat=decision.repeat)
        return HANDLERS[name](rt, data, call)
    except Rejected as refusal:
        return refusal.reply


def _injected_error(rt: SimulatorRuntime, name: str, fault: EndpointFault) -> Response:
    code = fault.error_code
    rt.state.count_code(name, code)
    log.info("sim.request", endpoint=name, code=code, injected=True)
    if code.startswith("http_"):
        status = int(code.removeprefix("http_"))
        if status == 502:
            return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502)
        return PlainTextResponse("Internal Server Error", status_code=status)
    body, headers = seal(
        Reply(code=code, msg=MESSAGES.get(code, code)).body(),
        rt.signer,
        unsigned=fault.unsigned,
        spoil=fault.bad_signature,
    )
    return Response(body, status_code=200, headers=headers)


async def _drop(request: Request, rt: SimulatorRuntime, name: str) -> Response:
    """Close the connection without a byte of answer (the client sees a disconnect)."""
    rt.state.count_code(name, "dropped")
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("this server does not let the simulator drop a connection")
    transport.close()
    for _ in range(3):  # let the server see the connection is gone before it tries to answer
        await asyncio.sleep(0)
    return Response(status_code=204)


def routes() -> list[Route]:
    return [Route(GATEWAY_PREFIX + "/{endpoint}", gateway_endpoint, methods=["POST"])]
