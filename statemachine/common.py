"""What the order and refund machines share: sources, effects, anomalies, the Decision, the guards.

Rules for this package (they hold in every module):

1. Only the standard library and ``transitions`` are imported (a test parses every module).
2. No I/O, no clock, no logging: the shell passes ``now`` and every fact in; the core answers
   with a ``Decision`` that names the new state and the effects the shell must carry out.
3. Money is ``Decimal``; a ``float`` amount is impossible input and raises ``TypeError``.
4. Expected outcomes (a decline, a duplicate, a contradiction) are outcomes, never exceptions.
   Exceptions (``ValueError``/``TypeError``) mean impossible input: a bug in the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final, Generic, NamedTuple, Protocol, TypeAlias, TypeVar


class Source(StrEnum):
    """Where a fact came from."""

    API = "api"
    NOTIFICATION = "notification"
    POLL = "poll"
    OPERATOR = "operator"


class AnomalyKind(StrEnum):
    """Contradictions the core records instead of applying; an operator or a query resolves them."""

    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    APP_MISMATCH = "app_mismatch"
    LATE_SUCCESS = "late_success"
    SUCCESS_CONTRADICTED = "success_contradicted"
    REFUND_CONTRADICTED = "refund_contradicted"
    REFUND_OVER_PAID = "refund_over_paid"
    UNKNOWN_REFUND = "unknown_refund"
    NOT_FOUND_AT_GATEWAY = "not_found_at_gateway"


class Outcome(StrEnum):
    """What a decision amounts to; only APPLIED changes the state."""

    APPLIED = "applied"
    NOOP = "noop"
    DUPLICATE = "duplicate"
    ANOMALY = "anomaly"
    CONFIRM = "confirm"
    REJECTED = "rejected"


EVENT_TYPES: Final = frozenset(
    {
        "payment.succeeded",
        "payment.failed",
        "payment.closed",
        "refund.succeeded",
        "refund.failed",
        "token.saved",
        "token.removed",
        "anomaly.detected",
    }
)

# Create/refund answers whose effect at the gateway is not known: treated like a timeout (UNKNOWN,
# then a query), never like a decline, so a charge that did happen is not reported as failed.
UNCERTAIN_SUBMIT_CODES: Final = frozenset({"SYSTEM_ERROR", "UNEXPECTED_ERROR", "REQUEST_TIMEOUT"})
# A duplicate merchant number: the earlier attempt may have gone through.
DUPLICATE_SUBMIT_CODE: Final = "ORDER_REPEAT"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmitEvent:
    """Publish a merchant event (through the outbox)."""

    type: str

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveToken:
    """Store the payment token from the evidence for this user (the core never holds the token id)."""

    user_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmByQuery:
    """Ask /orderQuery or /refundQuery soon, before believing the reported fact."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resubmit:
    """Send the create/refund request again with the same merchant number."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordAnomaly:
    """Record a contradiction for an operator; ``detail`` is short text without secrets."""

    kind: AnomalyKind
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartNextRefund:
    """The order's refund slot is free: submit its next waiting refund."""


Effect: TypeAlias = EmitEvent | SaveToken | ConfirmByQuery | Resubmit | RecordAnomaly | StartNextRefund

S = TypeVar("S", bound=StrEnum)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision(Generic[S]):
    """The answer to one input: outcome, the edge taken (``to_state`` None when unchanged), effects."""

    outcome: Outcome
    from_state: S
    to_state: S | None
    trigger: str
    effects: tuple[Effect, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the decision moves the record to a new state."""
        return self.to_state is not None


class Row(NamedTuple, Generic[S]):
    """One table row: on ``trigger`` in any of ``sources`` go to ``dest`` (None: stay)."""

    trigger: str
    sources: tuple[S, ...]
    dest: S | None
    outcome: Outcome
    effects: tuple[Effect, ...] = ()
    via: Source | None = None  # the row matches only facts from this source; None matches any
    anomaly: AnomalyKind | None = None


def require_decimal(name: str, value: object) -> None:
    """Raise TypeError unless ``value`` is a finite Decimal (floats are never money)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{name} must be a finite Decimal, got {value!r}")


# -- guards both machines apply before their table (each file's rules say where)


class Priced(Protocol):
    """A record or a report that names an amount of money."""

    @property
    def amount(self) -> Decimal: ...

    @property
    def currency(self) -> str: ...


class Submitted(Protocol):
    """A record that may have been sent to the gateway."""

    @property
    def state(self) -> StrEnum: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def last_submit_at(self) -> datetime | None: ...


def check_report(
    amount: object, status: str, source: Source, *, statuses: frozenset[str], status_of: str, called: str
) -> None:
    """Raise unless a report has a Decimal amount, one of ``statuses`` and a gateway source.

    The errors name what the status is ``status_of`` and what the report is ``called``.
    """
    require_decimal("amount", amount)
    if status not in statuses:
        raise ValueError(f"unknown {status_of} status {status!r}")
    if source not in (Source.NOTIFICATION, Source.POLL):
        raise ValueError(f"a {called} comes from a notification or a poll, not {source}")


def money_mismatch(record: Priced, report: Priced) -> str | None:
    """The mismatch trigger for a report whose currency, then amount (exactly equal), is not the record's."""
    if report.currency != record.currency:
        return "report_currency_mismatch"
    if report.amount != record.amount:
        return "report_amount_mismatch"
    return None


def rejection_trigger(code: str, wait_codes: frozenset[str] = frozenset()) -> str:
    """A refusal is a decline, unless its code says the record may exist after all (or means "not now")."""
    if code == DUPLICATE_SUBMIT_CODE:
        return "submit_duplicate"
    if code in UNCERTAIN_SUBMIT_CODES:
        return "submit_unknown"
    return "submit_rejected_wait" if code in wait_codes else "submit_rejected"


def not_found_trigger(
    record: Submitted, unknown: StrEnum, pending: StrEnum, now: datetime, limits: tuple[timedelta, timedelta]
) -> str:
    """``not_found_overdue`` once a not-found answer should no longer be waited out, else ``not_found``.

    Overdue: an ``unknown`` record past the grace since its last submit (or its creation), a
    ``pending`` one past the alarm since its creation; ``limits`` is (grace, alarm).
    """
    grace, alarm = limits
    if record.state is unknown:
        overdue = now - (record.last_submit_at or record.created_at) >= grace
    else:
        overdue = record.state is pending and now - record.created_at >= alarm
    return "not_found_overdue" if overdue else "not_found"


def anomaly_effects(row: Row[S], state: S, source: Source, reason: str | None = None) -> tuple[Effect, ...]:
    """The effects of a row that records an anomaly (none for any other row); ``reason`` adds why."""
    if row.anomaly is None:
        return ()
    detail = f"{row.trigger} in {state} via {source}"
    if reason is not None:
        detail = f"{detail}: {reason}"
    return (RecordAnomaly(kind=row.anomaly, detail=detail), EmitEvent(type="anomaly.detected"))
