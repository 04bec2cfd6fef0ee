"""The merchant's Python API: pay, pay with a saved card, refund, look up, manage tokens.

Every call goes through the same store, state machines and jobs as notifications and polls,
so what this API reports is exactly what the workers will act on. Results are plain values
(``to_dict()`` gives the CLI's ``--json``); token ids never leave as more than a hint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.config import SettingsError
from worker.flows.payments import after_open, open_order, send, stored_request
from worker.flows.refunding import create_refund
from worker.flows.tokens import list_tokens, remove_token, usable_token
from worker.gateway import ChecusClient, RequestInvalid
from worker.gateway.money import from_minor
from worker.gateway.requests import HostedCardPayment, TokenPayment
from worker.runtime import Runtime
from worker.service_errors import Conflict, InvalidRequest, NotConfigured, OutcomeUnknown
from worker.store import repo
from worker.store.db import read
from worker.store.records import OrderRecord, RefundRecord, TokenRecord, TransitionRecord


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentResult:
    out_trade_no: str
    state: str  # our state after the create call: PENDING, FAILED, or UNKNOWN (being resolved by query)
    redirect_url: str | None  # send the buyer here (cashier or 3DS); None when no browser step is needed
    gateway_hint: str | None  # /orderAndPay's own status (SUCCESS is a hint until confirmed)
    code: str | None = None  # Checus's refusal code when it refused the payment

    def to_dict(self) -> dict[str, Any]:
        return dict(_plain(asdict(self)))


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundView:
    refund: RefundRecord
    history: list[TransitionRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(_plain({**asdict(self.refund), "history": [asdict(h) for h in self.history]}))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderView:
    order: OrderRecord
    history: list[TransitionRecord]
    refunds: list[RefundView]

    @property
    def refunded(self) -> Decimal:
        zero = from_minor(0, self.order.currency)  # keeps the currency's exponent: 0.00 USD, 0 IDR
        return sum((r.refund.amount for r in self.refunds if r.refund.state == "REFUND_SUCCESS"), zero)

    def to_dict(self) -> dict[str, Any]:
        order = asdict(self.order)
        order.pop("request_json", None)
        return dict(_plain({**order, "refunded": self.refunded, "history": [asdict(h) for h in self.history],
                            "refunds": [r.to_dict() for r in self.refunds]}))


def token_dict(token: TokenRecord) -> dict[str, Any]:
    data = asdict(token)
    data.pop("token_id")
    return dict(_plain(data))


class PaymentService:
    """Every method returns a result or raises a ``service_errors.ServiceError`` (see its tree)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def create_card_payment(self, *, out_trade_no: str, amount: Decimal, currency: str, user_id: str, subject: str,
                            front_callback_url: str, save_card: bool = False, country: str | None = None,
                            allowed_card_orgs: tuple[str, ...] = (), expire_seconds: int | None = None,
                            reference: str | None = None) -> PaymentResult:
        """A hosted-checkout card payment; redirect the buyer to ``redirect_url``."""
        with _invalid_as_refused():
            request = HostedCardPayment(
                out_trade_no=out_trade_no, subject=subject, amount=amount, currency=currency, user_id=user_id,
                front_callback_url=front_callback_url, country=country, notify_url=self.rt.notify_url("payment"),
                expire_seconds=expire_seconds, allowed_card_orgs=allowed_card_orgs, token_for_future_use=save_card,
                reference=reference,
            )
        return self._create(request, token_ref=None)

    def pay_with_token(self, *, out_trade_no: str, user_id: str, token: int, amount: Decimal, currency: str,
                       country: str, subject: str, client_ip: str, user_agent: str,
                       front_callback_url: str | None = None) -> PaymentResult:
        """A later payment with a saved card; refused locally unless the token is Activated and the user's."""
        saved = usable_token(self.rt, user_id, token)
        with _invalid_as_refused():
            request = TokenPayment(
                out_trade_no=out_trade_no, subject=subject, amount=amount, currency=currency, country=country,
                user_id=user_id, payment_token_id=saved.token_id, client_ip=client_ip, user_agent=user_agent,
                notify_url=self.rt.notify_url("payment"), front_callback_url=front_callback_url,
            )
        return self._create(request, token_ref=saved.id)

    def _create(self, request: HostedCardPayment | TokenPayment, *, token_ref: int | None) -> PaymentResult:
        """Settings first, then store-and-claim, then send: an error before the claim means nothing was stored."""
        client = _configured_client(self.rt)
        order, created = open_order(self.rt, request, token_ref=token_ref)
        if not created:
            return self._existing(order, request, token_ref)
        sent = send(self.rt, client, order.id, order.ledger.sends + 1, request)
        after_open(self.rt, request.out_trade_no)
        if sent.applied is None:
            raise OutcomeUnknown(f"Checus may have taken {request.out_trade_no}; it is being resolved by query",
                                 ref=request.out_trade_no, redirect_url=sent.reply.redirect_url if sent.reply else None)
        decision = sent.applied.decision
        return PaymentResult(out_trade_no=request.out_trade_no, state=str(decision.to_state or decision.from_state),
                             redirect_url=sent.reply.redirect_url if sent.reply else None,
                             gateway_hint=sent.reply.status.value if sent.reply else None,
                             code=getattr(sent.event, "code", None))

    def _existing(self, order: OrderRecord, request: HostedCardPayment | TokenPayment,
                  token_ref: int | None) -> PaymentResult:
        """The same request again returns the order as it stands; a different one is a ``Conflict``."""
        if order.request_json != stored_request(request) or order.token_ref != token_ref:
            raise Conflict(f"{request.out_trade_no} is already a different payment", ref=request.out_trade_no)
        return PaymentResult(out_trade_no=order.out_trade_no, state=order.state, redirect_url=order.redirect_url,
                             gateway_hint=order.submit_hint, code=None)

    def refund(self, out_trade_no: str, amount: Decimal, *, out_refund_no: str | None = None,
               comments: str | None = None) -> RefundView:
        """Request a (partial) refund; refused locally above what is left to refund."""
        record = create_refund(self.rt, out_trade_no, amount, out_refund_no=out_refund_no, comments=comments)
        return self.get_refund(record.out_refund_no) or RefundView(refund=record)

    def get_order(self, out_trade_no: str) -> OrderView | None:
        with read(self.rt.engine) as conn:
            order = repo.find_order(conn, out_trade_no)
            if order is None:
                return None
            refunds = [RefundView(refund=r, history=repo.history(conn, "refund", r.id))
                       for r in repo.refunds_of(conn, order.id)]
            return OrderView(order=order, history=repo.history(conn, "order", order.id), refunds=refunds)

    def get_refund(self, out_refund_no: str) -> RefundView | None:
        with read(self.rt.engine) as conn:
            refund = repo.find_refund(conn, out_refund_no)
            if refund is None:
                return None
            return RefundView(refund=refund, history=repo.history(conn, "refund", refund.id))

    def list_tokens(self, user_id: str, *, sync: bool = True) -> list[TokenRecord]:
        if sync:
            _configured_client(self.rt)
        with _invalid_as_refused():
            return list_tokens(self.rt, user_id, sync=sync)

    def remove_token(self, user_id: str, token: int, *, reason: str | None = None) -> TokenRecord:
        _configured_client(self.rt)
        with _invalid_as_refused():
            return remove_token(self.rt, user_id, token, reason=reason)


@contextlib.contextmanager
def _invalid_as_refused() -> Iterator[None]:
    """A request that breaks a wire rule is refused before anything is stored."""
    try:
        yield
    except RequestInvalid as exc:
        raise InvalidRequest(str(exc)) from None


def _configured_client(rt: Runtime) -> ChecusClient:
    """The gateway client, or ``NotConfigured`` naming the setting (checked before anything is stored)."""
    try:
        return rt.client
    except SettingsError as exc:
        raise NotConfigured(str(exc), variable=exc.variable) from None
