"""What the merchant API answers instead of a result, grouped by what the merchant can do next.

Every call of ``PaymentService`` either returns a result (a payment or refund in a state: "done",
or "unknown, being resolved" when the state says UNKNOWN) or raises one of these. None of them
ever means "perhaps": an error says nothing will happen, or it names the record being resolved.

::

    ServiceError
    ├── Refused             Nothing was stored or sent, and nothing will happen. ``reason``.
    │   ├── InvalidRequest  The input breaks a rule (``field`` names it). Fix it and call again.
    │   ├── NotConfigured   A setting this call needs is missing or wrong (``variable``).
    │   ├── RefundRefused   A refund rule: not paid, above what is left (``refundable``) ...
    │   ├── TokenRefused    The saved card cannot be used or removed (not the user's, Deleted ...).
    │   └── GatewayRefused  Checus refused a call that changes nothing on our side (``code``).
    ├── NotFound            No such payment, refund or saved card (``ref``).
    ├── Conflict            The merchant number is already taken by a *different* request (``ref``).
    │                       The same request again is not a conflict: it returns the existing record.
    ├── Busy                Nothing was done: the record kept changing under this call, or Checus
    │                       did not answer a read (a token inquiry). Call again.
    └── OutcomeUnknown      Checus may have acted and we could not record its answer: record ``ref``
                            is being resolved by query. Never retry it with a new number; read the
                            record later, or wait for its event.

``reason`` is a short machine-readable word (metrics, the CLI, problem+json types); messages never
carry a key, a ``sign`` value, a card number or a full token id.
"""

from __future__ import annotations

from decimal import Decimal


class ServiceError(Exception):
    """Base of every merchant API error."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class Refused(ServiceError):
    """Nothing was stored or sent; nothing will happen."""

    reason = "refused"


class InvalidRequest(Refused):
    """The input breaks a rule; ``field`` names the input when one is to blame."""

    reason = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotConfigured(Refused):
    """A setting the call needs is missing or malformed."""

    reason = "not_configured"

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class RefundRefused(Refused):
    """A refund request broke a rule before anything was stored (``reason`` says which)."""

    def __init__(self, reason: str, refundable: Decimal | None = None) -> None:
        super().__init__(reason if refundable is None else f"{reason} (refundable: {refundable})", reason=reason)
        self.refundable = refundable


class TokenRefused(Refused):
    """The saved card cannot be used or removed (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, reason=reason)


class GatewayRefused(Refused):
    """Checus refused a call whose refusal changes nothing of ours (``code``)."""

    reason = "gateway_refused"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class NotFound(ServiceError):
    """No such record."""

    reason = "not_found"

    def __init__(self, message: str, *, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


class Conflict(ServiceError):
    """The merchant number is taken by a different request."""

    reason = "conflict"

    def __init__(self, message: str, *, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


class Busy(ServiceError):
    """Nothing was done: the record kept changing under the call, or Checus did not answer a read."""

    reason = "busy"


class OutcomeUnknown(ServiceError):
    """Checus may have acted; the record ``ref`` is being resolved by query (never guessed)."""

    reason = "outcome_unknown"

    def __init__(self, message: str, *, ref: str, redirect_url: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref
        self.redirect_url = redirect_url  # Checus's cashier, when it answered before we could record it
