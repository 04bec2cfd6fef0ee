"""Records of the store as the API's response models (no request_json, no token id, no evidence)."""

from __future__ import annotations

from worker.api.models import Card, Payment, Refund, Transition
from worker.service import OrderView, RefundView
from worker.store.records import TokenRecord, TransitionRecord


def transitions(history: list[TransitionRecord]) -> list[Transition]:
    return [Transition(version=h.version, at=h.at, from_state=h.from_state, to_state=h.to_state, trigger=h.trigger,
                       source=h.source) for h in history]


def refund(view: RefundView, out_trade_no: str) -> Refund:
    r = view.refund
    return Refund(out_refund_no=r.out_refund_no, out_trade_no=out_trade_no, state=r.state, amount=str(r.amount),
                  currency=r.currency, comments=r.comments, refund_trade_no=r.refund_trade_no,
                  created_at=r.created_at, updated_at=r.updated_at, history=transitions(view.history))


def payment_fields(view: OrderView) -> dict[str, object]:
    o = view.order
    return {"out_trade_no": o.out_trade_no, "kind": o.kind, "state": o.state, "amount": str(o.amount),
            "currency": o.currency, "refunded": str(view.refunded), "country": o.country, "user_id": o.user_id,
            "subject": o.subject, "save_card": o.tokenize, "card_id": o.token_ref, "redirect_url": o.redirect_url,
            "gateway_hint": o.submit_hint, "created_at": o.created_at, "updated_at": o.updated_at,
            "expire_at": o.expire_at, "history": transitions(view.history),
            "refunds": [refund(r, o.out_trade_no) for r in view.refunds]}


def payment(view: OrderView) -> Payment:
    return Payment.model_validate(payment_fields(view))


def card(token: TokenRecord) -> Card:
    return Card(card_id=token.id, status=token.status, card_org=token.card_org, masked_card=token.masked_card,
                token_hint=token.token_hint, expiry=token.expiry, created_at=token.created_at,
                updated_at=token.updated_at)
