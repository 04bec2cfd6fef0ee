"""What can go wrong when talking to Checus, grouped by what the caller must do next.

::

    ChecusError
    ├── RequestInvalid        our request broke a rule before it was sent; nothing was sent.
    │                         Fix the input; never retry as is.
    ├── GatewayRejected       Checus answered with code != APPLY_SUCCESS (``code``, ``msg``).
    │   │                     The request had no effect. Expected business outcomes
    │   │                     (a decline is *not* this: it is a status) and our mistakes.
    │   ├── DuplicateRequest  ORDER_REPEAT: the outTradeNo / outRefundNo already exists.
    │   │                     ``data`` carries the existing record when Checus sends it.
    │   │                     Resolve by query; the earlier request may well have succeeded.
    │   └── RecordNotFound    ORDER_NOT_EXIST: the order or refund is unknown to Checus.
    └── OutcomeUnknown        We cannot know whether Checus acted: timeout after sending,
        │                     connection reset, HTTP 5xx, an unverifiable or unreadable answer,
        │                     no ``code`` or one we do not know, or a code that names the
        │                     gateway's own trouble (``statemachine.UNCERTAIN_CODES``).
        │                     The caller must resolve it by query and never treat it as failure.
        └── RequestNotSent    The connection was never made, so nothing reached Checus.
                              Retrying is safe; treating it as unknown is also safe, which
                              is why it is a subclass.

Every exception carries ``reason``: a short machine-readable word for metrics and logs.
None of them ever holds a request body, a ``sign`` value or a key.
"""

from __future__ import annotations

from typing import Any

from statemachine import DUPLICATE_CODE, NOT_FOUND_CODE, UNCERTAIN_CODES


class ChecusError(Exception):
    """Base of every gateway error."""

    reason: str = "checus_error"

    def __init__(self, message: str, *, reason: str | None = None, endpoint: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.endpoint = endpoint


class RequestInvalid(ChecusError, ValueError):
    """Refused locally before sending: the request breaks a wire rule."""

    reason = "request_invalid"


class GatewayRejected(ChecusError):
    """Checus refused the request (``code`` != APPLY_SUCCESS); no effect happened."""

    reason = "rejected"

    def __init__(
        self,
        code: str,
        msg: str,
        *,
        endpoint: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{endpoint or 'gateway'} rejected: {code}: {msg[:200]}", endpoint=endpoint)
        self.code = code
        self.msg = msg
        self.data = data or {}


class DuplicateRequest(GatewayRejected):
    """ORDER_REPEAT: the merchant number was used before. Query to learn what it became."""

    reason = "duplicate"


class RecordNotFound(GatewayRejected):
    """ORDER_NOT_EXIST: Checus has no such order or refund."""

    reason = "not_found"


class OutcomeUnknown(ChecusError):
    """Checus may or may not have acted. Resolve by query; never treat as failure."""

    reason = "outcome_unknown"


class RequestNotSent(OutcomeUnknown):
    """The request never left: connecting failed. Safe to retry."""

    reason = "not_sent"


def rejection_for(code: str, msg: str, *, endpoint: str, data: dict[str, Any] | None) -> ChecusError:
    """Map a non-APPLY_SUCCESS answer to the right branch of the tree."""
    if code == DUPLICATE_CODE:
        return DuplicateRequest(code, msg, endpoint=endpoint, data=data)
    if code == NOT_FOUND_CODE:
        return RecordNotFound(code, msg, endpoint=endpoint, data=data)
    if code in UNCERTAIN_CODES:
        return OutcomeUnknown(f"{endpoint}: gateway answered {code}", reason=f"gateway_{code.lower()}",
                              endpoint=endpoint)
    return GatewayRejected(code, msg, endpoint=endpoint, data=data)
