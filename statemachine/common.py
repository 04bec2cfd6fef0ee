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

from .sending import MAX_RETRY_LATER, Answer, SendLedger, classify


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
    REFUND_RETRY_EXHAUSTED = "refund_retry_exhausted"


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

    @property
    def accepted_at(self) -> datetime | None: ...

    @property
    def ledger(self) -> SendLedger: ...


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


def rejection_trigger(record: Submitted, code: str, send_no: int, *, retry_later: frozenset[str] = frozenset(),
                      max_waits: int = MAX_RETRY_LATER) -> str:
    """The trigger for a refusal of send ``send_no`` (``sending`` rules 2 and 3).

    A refusal ends the record (``submit_rejected``) only when the send is known to be the first
    that could have had an effect; otherwise it is resolved by query (``submit_rejected_resend``).
    ORDER_REPEAT and codes we cannot read as definitive are never refusals.
    """
    answer = classify(code, retry_later=retry_later)
    if answer is Answer.REPEAT:
        return "submit_duplicate"
    if answer is Answer.UNKNOWN:
        return "submit_unknown"
    if not record.ledger.known_first(send_no):
        return "submit_rejected_resend"
    if answer is Answer.RETRY_LATER:
        return "submit_wait_exhausted" if send_no >= max_waits else "submit_rejected_wait"
    return "submit_rejected"


def not_found_trigger(
    record: Submitted, unknown: StrEnum, pending: StrEnum, now: datetime, limits: tuple[timedelta, timedelta]
) -> str:
    """The trigger for an ORDER_NOT_EXIST answer to a query about ``record``; ``limits`` is (grace, alarm).

    UNKNOWN, within the grace since its last send: ``not_found`` (Checus's query may lag). Past it,
    by the answer to that send:

    - none, or one we could not read: the send was lost, ``not_found_overdue`` (send it again);
    - a refusal (or, for a refund, "not now" past the cap): sending again would only be refused
      again, and an earlier send whose answer we never read may still show up, so the query is
      given until the alarm, then ``not_found_after_refusal`` (nothing was taken: FAILED);
    - ORDER_REPEAT: Checus knows the number and its query contradicts it: ``not_found_alarm``
      once the alarm has passed since that answer (an operator looks), never a resend.

    PENDING: ``not_found_alarm`` once the alarm has passed since the last send Checus accepted.
    """
    grace, alarm = limits
    sent = record.last_submit_at or record.created_at
    accepted = record.accepted_at or sent
    if record.state is pending:
        return "not_found_alarm" if now - accepted >= alarm else "not_found"
    if record.state is not unknown or now - sent < grace:
        return "not_found"
    ledger = record.ledger
    if ledger.last_answer is Answer.REPEAT:
        return "not_found_alarm" if now - accepted >= alarm else "not_found"
    if ledger.last_answer is Answer.REJECTED or (
        ledger.last_answer is Answer.RETRY_LATER and ledger.clean >= MAX_RETRY_LATER
    ):
        return "not_found_after_refusal" if now - sent >= alarm else "not_found"
    return "not_found_overdue"


def anomaly_effects(row: Row[S], state: S, source: Source, reason: str | None = None) -> tuple[Effect, ...]:
    """The effects of a row that records an anomaly (none for any other row); ``reason`` adds why."""
    if row.anomaly is None:
        return ()
    detail = f"{row.trigger} in {state} via {source}"
    if reason is not None:
        detail = f"{detail}: {reason}"
    return (RecordAnomaly(kind=row.anomaly, detail=detail), EmitEvent(type="anomaly.detected"))
