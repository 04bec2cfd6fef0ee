"""Errors as RFC 9457 ``application/problem+json``, one stable ``type`` per kind of error.

The ``type`` says what the merchant can do next, like the service's error tree it mirrors
(``worker.service_errors``); ``reason`` carries the service's machine-readable word (e.g.
``above_refundable``). ``detail`` is written here or is the service's own message, which never
holds a key, a ``sign`` value, a card number or a full token id. An unexpected error answers a
bare 500 ``internal`` (the log has the rest), never a traceback.

Status choices: every ``Refused`` but ``NotConfigured`` is 422 (understood, not doable; nothing
stored); ``NotConfigured`` is 503 (the operator's to fix); ``Busy`` is 503 with ``Retry-After``
(transient, call again as is; not 409, which asks the caller to change something); an unknown
outcome of a create is not an error at all: 202 with the record being resolved. Elsewhere it is
504 ``outcome_unknown`` naming the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from worker.service_errors import (
    Busy,
    Conflict,
    GatewayRefused,
    InvalidRequest,
    NotConfigured,
    NotFound,
    OutcomeUnknown,
    RefundRefused,
    Refused,
    ServiceError,
    TokenRefused,
)

log = structlog.get_logger("worker.api")
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "tag:checus-worker,2026:problems/"


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str
    status: int
    title: str

    @property
    def type(self) -> str:
        return TYPE_BASE + self.slug


KINDS: dict[str, Kind] = {k.slug: k for k in (
    Kind("invalid-request", 422, "The request breaks a rule; nothing was stored"),
    Kind("validation-failed", 422, "The request does not match the API's schema"),
    Kind("refund-refused", 422, "The refund breaks a refund rule; nothing was stored"),
    Kind("card-refused", 422, "The saved card cannot be used or removed"),
    Kind("gateway-refused", 422, "Checus refused the call; nothing changed"),
    Kind("refused", 422, "Refused; nothing was stored or sent"),
    Kind("not-configured", 503, "The service is not configured for this call"),
    Kind("not-found", 404, "No such resource"),
    Kind("conflict", 409, "The merchant number is taken by a different request"),
    Kind("busy", 503, "The record kept changing; nothing was done, call again"),
    Kind("outcome-unknown", 504, "Checus may have acted; the record is being resolved"),
    Kind("unauthorized", 401, "A valid API key is required"),
    Kind("forbidden", 403, "This API key may only read"),
    Kind("idempotency-key-reused", 422, "This Idempotency-Key was used with another request"),
    Kind("idempotency-in-progress", 409, "The first request with this Idempotency-Key is still running"),
    Kind("method-not-allowed", 405, "Method not allowed"),
    Kind("internal", 500, "Internal error"),
)}


class ApiProblem(Exception):
    """A problem the API itself answers (auth, idempotency, not found ...)."""

    def __init__(self, slug: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.kind = KINDS[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def body(kind: Kind, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind.type, "title": kind.title, "status": kind.status, "detail": detail,
            **{k: v for k, v in extra.items() if v is not None}}


def _slug(exc: ServiceError) -> str:
    table: tuple[tuple[type[ServiceError], str], ...] = (
        (InvalidRequest, "invalid-request"), (NotConfigured, "not-configured"), (RefundRefused, "refund-refused"),
        (TokenRefused, "card-refused"), (GatewayRefused, "gateway-refused"), (Refused, "refused"),
        (NotFound, "not-found"), (Conflict, "conflict"), (Busy, "busy"), (OutcomeUnknown, "outcome-unknown"),
    )
    return next(slug for kind, slug in table if isinstance(exc, kind))


def from_service(exc: ServiceError) -> ApiProblem:
    """The problem for a service error: its kind, its reason and the context a merchant can use."""
    if isinstance(exc, TokenRefused) and exc.reason == "token_not_found":
        return ApiProblem("not-found", "no such saved card for this user", reason=exc.reason)
    slug = _slug(exc)
    detail = " ".join(str(exc).split())
    extra: dict[str, Any] = {"reason": exc.reason}
    headers: dict[str, str] = {}
    if isinstance(exc, NotConfigured):
        log.error("api.not_configured", variable=exc.variable)
        detail = "the service is not configured to make this call; the operator's log names the setting"
    if isinstance(exc, InvalidRequest):
        extra["field"] = exc.field
    if isinstance(exc, RefundRefused) and exc.refundable is not None:
        extra["refundable"] = str(exc.refundable)
    if isinstance(exc, GatewayRefused):
        extra["code"] = exc.code
    if isinstance(exc, NotFound | Conflict | OutcomeUnknown):
        extra["ref"] = exc.ref
    if isinstance(exc, Busy):
        headers["Retry-After"] = "1"
    return ApiProblem(slug, detail, headers=headers, **extra)
