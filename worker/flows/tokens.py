"""Saved card tokens: listing synced with /inquirePaymentToken, removal via /removePaymentToken.

A token is a charge credential. It is stored only in the SQL store; everywhere else (logs,
events, CLI output, job arguments) it appears as its last four characters. A token is marked
Deleted only when Checus answers Deleted, and a Deleted (or Expired, or someone else's) token
is refused locally before any gateway call. A removal whose outcome is unknown blocks the token
locally (``Removing``: never charged while Checus may have deleted it) until the next sync with
/inquirePaymentToken says what it is; the merchant is told so (``OutcomeUnknown``).
"""

from __future__ import annotations

from typing import Any

import structlog

from worker.gateway import GatewayRejected
from worker.gateway import OutcomeUnknown as ChecusOutcomeUnknown
from worker.gateway.requests import TokenInquiry, TokenRemoval
from worker.runtime import Runtime
from worker.service_errors import Busy, GatewayRefused, OutcomeUnknown, TokenRefused
from worker.store import outbox, repo
from worker.store.db import read, write
from worker.store.records import TokenRecord

log = structlog.get_logger("worker.flows.tokens")


def usable_token(rt: Runtime, user_id: str, token_pk: int) -> TokenRecord:
    """The token if it is Activated and belongs to ``user_id``; otherwise ``TokenRefused``."""
    token = _owned(rt, user_id, token_pk)
    if token.status != "Activated":
        raise TokenRefused(f"token_{token.status.lower()}")
    return token


def list_tokens(rt: Runtime, user_id: str, *, sync: bool = True) -> list[TokenRecord]:
    """The user's tokens; with ``sync`` their status is first refreshed from Checus."""
    if sync:
        try:
            remote = rt.client.inquire_tokens(TokenInquiry(user_id=user_id))
        except GatewayRejected as exc:
            raise GatewayRefused(f"Checus refused the token inquiry: {exc.code}", code=exc.code) from None
        except ChecusOutcomeUnknown as exc:  # a read: nothing changed on either side
            raise Busy(f"Checus did not answer the token inquiry ({exc.reason}); nothing changed, call again",
                       reason="gateway_unanswered") from None
        now = rt.clock()
        with write(rt.engine) as conn:
            for item in remote:
                local = repo.find_token(conn, item.payment_token_id)
                if local is not None and local.user_id == user_id and local.status != item.status.value:
                    repo.set_token_status(conn, local.id, item.status.value, now, expiry=item.expiry)
    with read(rt.engine) as conn:
        return repo.tokens_of(conn, user_id)


def remove_token(rt: Runtime, user_id: str, token_pk: int, *, reason: str | None = None) -> TokenRecord:
    token = _owned(rt, user_id, token_pk)
    if token.status == "Deleted":
        raise TokenRefused("token_deleted")
    client = rt.client
    try:
        answer = client.remove_token(TokenRemoval(user_id=user_id, payment_token_id=token.token_id, reason=reason))
    except GatewayRejected as exc:
        raise GatewayRefused(f"Checus refused the removal: {exc.code}", code=exc.code) from None
    except ChecusOutcomeUnknown:
        _block_until_synced(rt, token)
        raise OutcomeUnknown(f"the removal of token {token.id} may have happened; the card is blocked until "
                             f"the next `tokens list` sync says", ref=f"token:{token.id}") from None
    if answer.status.value != "Deleted":
        log.warning("token.not_removed", user_id=user_id, token_hint=token.token_hint, status=answer.status.value)
        return token
    now = rt.clock()
    with write(rt.engine) as conn:
        repo.set_token_status(conn, token.id, "Deleted", now)
        event_id = f"token.removed:token:{token.id}"
        outbox.add(conn, event_id=event_id, type="token.removed", now=now, payload=_event(event_id, token, now))
        removed = repo.get_token(conn, token.id)
    if rt.event_sinks:
        rt.enqueuer.deliver_events()
    assert removed is not None
    return removed


def _block_until_synced(rt: Runtime, token: TokenRecord) -> None:
    with write(rt.engine) as conn:
        repo.set_token_status(conn, token.id, "Removing", rt.clock())
    log.warning("token.removal_unknown", user_id=token.user_id, token_hint=token.token_hint)


def _owned(rt: Runtime, user_id: str, token_pk: int) -> TokenRecord:
    with read(rt.engine) as conn:
        token = repo.get_token(conn, token_pk)
    if token is None or token.user_id != user_id:
        raise TokenRefused("token_not_found")
    return token


def _event(event_id: str, token: TokenRecord, now: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "token.removed", "user_id": token.user_id, "token_hint": token.token_hint,
            "occurred_at": now.isoformat()}
