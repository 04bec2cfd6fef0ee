"""The /v1 resources: payments, refunds, a user's saved cards, and the event feed.

Each route is a few lines over ``PaymentService``. A create whose outcome is unknown answers
202 with the record as stored (state UNKNOWN, being resolved by query), never an error and
never "nothing happened": the store decides, and the record's state will say.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from worker.api import views
from worker.api.context import IdempotencyKey, api_of, guarded, json_answer, once, reader, to_response, writer
from worker.api.idempotency import Answer
from worker.api.keys import ApiKey
from worker.api.models import (
    CardList,
    CardRemoval,
    EventPage,
    Payment,
    PaymentCreate,
    PaymentCreated,
    Problem,
    Refund,
    RefundCreate,
)
from worker.api.problems import MEDIA_TYPE, ApiProblem
from worker.service_errors import Busy, OutcomeUnknown, TokenRefused

Reader = Annotated[ApiKey, Depends(reader)]
Writer = Annotated[ApiKey, Depends(writer)]
TradeNo = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")]
UserPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": Problem, "content": {MEDIA_TYPE: {}}} for s in (401, 422, *statuses)}


router = APIRouter(prefix="/v1")


@router.post("/payments", status_code=201, response_model=PaymentCreated, summary="Create a payment",
             responses={200: {"model": PaymentCreated, "description": "The same request again: the record"},
                        202: {"model": PaymentCreated, "description": "Outcome unknown: the record being resolved"},
                        **_problems(403, 409, 503)})
def create_payment(request: Request, payload: PaymentCreate, _key: Writer, key: IdempotencyKey = None) -> Response:
    return once(request, key, payload, lambda: _create_payment(request, payload))


def _create_payment(request: Request, p: PaymentCreate) -> Answer:
    service = api_of(request).service
    existed = service.get_order(p.out_trade_no) is not None
    try:
        if p.card_id is not None:
            result = service.pay_with_token(
                out_trade_no=p.out_trade_no, user_id=p.user_id, token=p.card_id, amount=Decimal(p.amount),
                currency=p.currency, country=p.country or "", subject=p.subject, client_ip=p.client_ip or "",
                user_agent=p.user_agent or "", front_callback_url=p.return_url)
        else:
            result = service.create_card_payment(
                out_trade_no=p.out_trade_no, amount=Decimal(p.amount), currency=p.currency, user_id=p.user_id,
                subject=p.subject, front_callback_url=p.return_url or "", save_card=p.save_card, country=p.country,
                reference=p.reference)
    except OutcomeUnknown as exc:
        return _created(request, exc.ref, 202, redirect_url=exc.redirect_url, detail=_resolving(exc.ref))
    status = 202 if result.state == "UNKNOWN" else 200 if existed else 201
    return _created(request, result.out_trade_no, status, refusal_code=result.code,
                    detail=_resolving(result.out_trade_no) if status == 202 else None)


def _resolving(ref: str) -> str:
    return (f"Checus may have taken payment {ref}; it is being resolved by query. Read GET /v1/payments/{ref} or "
            "wait for its event; never retry it under a new out_trade_no")


def _created(request: Request, ref: str, status: int, **extra: Any) -> Answer:
    view = api_of(request).service.get_order(ref)
    assert view is not None  # the store kept it before anything was sent
    fields = views.payment_fields(view)
    if extra.get("redirect_url") is None:
        extra.pop("redirect_url", None)
    return json_answer(status, PaymentCreated.model_validate({**fields, **extra}))


@router.get("/payments/{out_trade_no}", response_model=Payment, summary="Read a payment, its history and refunds",
            responses=_problems(404))
def get_payment(request: Request, out_trade_no: TradeNo, _key: Reader) -> Response:
    view = api_of(request).service.get_order(out_trade_no)
    if view is None:
        raise ApiProblem("not-found", f"no payment {out_trade_no}", ref=out_trade_no)
    return to_response(json_answer(200, views.payment(view)))


@router.post("/payments/{out_trade_no}/refunds", status_code=201, response_model=Refund, summary="Refund a payment",
             responses={200: {"model": Refund, "description": "The same refund again: the record"},
                        **_problems(403, 404, 409, 503)})
def create_refund(request: Request, out_trade_no: TradeNo, payload: RefundCreate, _key: Writer,
                  key: IdempotencyKey = None) -> Response:
    if payload.out_refund_no is None and key is None:
        raise ApiProblem("invalid-request", "give out_refund_no or an Idempotency-Key, so a repeat is not a second "
                         "refund", field="out_refund_no")
    return once(request, key, payload, lambda: _create_refund(request, out_trade_no, payload))


def _create_refund(request: Request, out_trade_no: str, p: RefundCreate) -> Answer:
    service = api_of(request).service
    order = service.get_order(out_trade_no)
    if order is None:
        raise ApiProblem("not-found", f"no payment {out_trade_no}", ref=out_trade_no)
    existed = p.out_refund_no is not None and service.get_refund(p.out_refund_no) is not None
    view = service.refund(order.order.out_trade_no, Decimal(p.amount), out_refund_no=p.out_refund_no,
                          comments=p.comments)
    return json_answer(200 if existed else 201, views.refund(view, order.order.out_trade_no))


@router.get("/refunds/{out_refund_no}", response_model=Refund, summary="Read a refund", responses=_problems(404))
def get_refund(request: Request, out_refund_no: TradeNo, _key: Reader) -> Response:
    api = api_of(request)
    view = api.service.get_refund(out_refund_no)
    if view is None:
        raise ApiProblem("not-found", f"no refund {out_refund_no}", ref=out_refund_no)
    from worker.store import repo
    from worker.store.db import read

    with read(api.rt.engine) as conn:
        order = repo.get_order(conn, view.refund.order_id)
    assert order is not None
    return to_response(json_answer(200, views.refund(view, order.out_trade_no)))


@router.get("/users/{user_id}/cards", response_model=CardList, summary="List a user's saved cards (synced with Checus)",
            responses=_problems(503))
def list_cards(request: Request, user_id: UserPath, _key: Reader) -> Response:
    service = api_of(request).service

    def act() -> Answer:
        try:
            tokens, synced = service.list_tokens(user_id, sync=True), True
        except Busy as exc:  # Checus could not be asked: the cards as last known, said so
            if exc.reason != "gateway_unanswered":
                raise
            tokens, synced = service.list_tokens(user_id, sync=False), False
        return json_answer(200, CardList(user_id=user_id, synced=synced, cards=[views.card(t) for t in tokens]))

    answer, headers = guarded(act)
    return to_response(answer, headers)


@router.delete("/users/{user_id}/cards/{card_id}", response_model=CardRemoval, summary="Remove a saved card",
               responses={202: {"model": CardRemoval, "description": "Outcome unknown: the card is blocked until "
                                "the next sync says"}, **_problems(403, 404, 503)})
def remove_card(request: Request, user_id: UserPath, card_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                _key: Writer) -> Response:
    service = api_of(request).service

    def current(status: int, detail: str | None = None) -> Answer:
        token = next((t for t in service.list_tokens(user_id, sync=False) if t.id == card_id), None)
        if token is None:
            raise ApiProblem("not-found", "no such saved card for this user", ref=str(card_id))
        return json_answer(status, CardRemoval(**views.card(token).model_dump(), detail=detail))

    def act() -> Answer:
        try:
            service.remove_token(user_id, card_id)
        except TokenRefused as exc:
            if exc.reason != "token_deleted":
                raise
        except OutcomeUnknown:
            return current(202, "Checus may have removed the card; it is blocked (Removing) until the next sync")
        return current(200)

    answer, headers = guarded(act)
    return to_response(answer, headers)


@router.get("/events", response_model=EventPage, summary="Page through the merchant events",
            responses=_problems())
def list_events(request: Request, _key: Reader,
                after: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$", description="A cursor")] = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    page = api_of(request).feed.page(int(after) if after else 0, limit)
    return to_response(json_answer(200, page))
