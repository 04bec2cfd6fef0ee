"""Fault injection: the ways a real gateway lets a merchant down, on demand and repeatably.

A plan is one JSON object (``PUT /__sim/faults``, or ``CHECUS_SIM_FAULTS``)::

    {"endpoints": {"orderQuery": {"error_rate": 1, "error_code": "SYSTEM_ERROR"},
                   "*": {"delay_seconds": 0.2}},
     "notifications": {"duplicate_rate": 0.5, "max_copies": 3},
     "hide_from_query": {"ORDER_1": 5, "*": 1},
     "refund_insufficient_balance": false,
     "repeat_answer": "replay"}

Endpoint faults, per request, drawn in a fixed order from one seeded RNG (so a run repeats):
``error_rate`` answers ``error_code`` *without* applying the request (a gateway code such as
``SYSTEM_ERROR``, or ``http_500``/``http_502`` for a bare HTTP error); ``drop_rate`` closes the
connection without an answer, after applying the request unless ``drop_applies_effect`` is
false; ``timeout_rate`` applies the request and answers only after ``timeout_seconds``.
``no_code_rate`` applies the request and then answers HTTP 200 with a body that has no usable
``code`` (``{}``, ``{"error": ...}`` or ``{"code": null}``): the gateway did the work, the
client cannot read that it did. ``delay_seconds`` adds latency; ``unsigned``/``bad_signature``
spoil the response ``sign``.

``repeat_answer`` is the answer to a repeated ``outTradeNo`` (orderAndPay) or ``outRefundNo``
(refund), which the documentation leaves open (WIRE.md §25 questions 5-6), so a client can be
tried against each reading: ``replay`` (the configured behaviour, the default),
``repeat_with_data`` (``ORDER_REPEAT`` with the existing record), ``repeat_without_data``
(``ORDER_REPEAT`` alone), ``reject:CODE`` (another refusal), or ``random`` (one of those four,
``reject:PARAMS_INVALID`` for the last, drawn per request).
All fault times are real seconds: they are test knobs, not protocol times, so ``time_scale``
does not touch them.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

ENDPOINTS = (
    "orderAndPay",
    "orderQuery",
    "refund",
    "refundQuery",
    "inquirePaymentToken",
    "removePaymentToken",
)
ANY = "*"
_ERROR_CODE = re.compile(r"^(?:[A-Z][A-Z0-9_]{1,63}|http_[45][0-9]{2})$")
_GATEWAY_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
REPLAY = "replay"
REPEAT_WITH_DATA = "repeat_with_data"
REPEAT_WITHOUT_DATA = "repeat_without_data"
REJECT_PREFIX = "reject:"
RANDOM = "random"
RANDOM_REPEATS = (REPLAY, REPEAT_WITH_DATA, REPEAT_WITHOUT_DATA, REJECT_PREFIX + "PARAMS_INVALID")
NO_CODE_BODIES: tuple[dict[str, Any], ...] = ({}, {"error": "Internal Server Error"}, {"code": None})
_T = TypeVar("_T")


class FaultSpecError(ValueError):
    """A fault plan that cannot be applied; the message names the offending key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointFault:
    error_rate: float = 0.0
    error_code: str = "SYSTEM_ERROR"
    timeout_rate: float = 0.0
    timeout_seconds: float = 15.0
    delay_seconds: float = 0.0
    unsigned: bool = False
    bad_signature: bool = False
    drop_rate: float = 0.0
    drop_applies_effect: bool = True
    no_code_rate: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyFault:
    """``drop_rate`` loses a notification entirely; after an ack, ``duplicate_rate`` sends 1..max_copies more."""

    duplicate_rate: float = 0.0
    max_copies: int = 1
    reorder_window_seconds: float = 0.0
    delay_seconds: float = 0.0
    drop_rate: float = 0.0
    bad_signature_rate: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointDecision:
    """What one request suffers; drawn before the request is handled.

    ``no_code`` is the code-less body to answer with, if any; ``repeat`` the concrete answer to a
    repeat (never ``random``), used only if the request turns out to repeat a known number.
    """

    error: bool = False
    drop: bool = False
    timeout: bool = False
    no_code: Mapping[str, Any] | None = None
    repeat: str = REPLAY


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    endpoints: Mapping[str, EndpointFault] = field(default_factory=dict)
    notifications: NotifyFault = field(default_factory=NotifyFault)
    hide_from_query: Mapping[str, float] = field(default_factory=dict)
    refund_insufficient_balance: bool = False
    repeat_answer: str = REPLAY

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FaultPlan:
        _no_unknown_keys(obj, {f.name for f in dataclasses.fields(cls)}, "faults")
        return cls(
            endpoints=_endpoints(obj.get("endpoints", {})),
            notifications=_build(NotifyFault, obj.get("notifications", {}), "notifications"),
            hide_from_query=_hidden(obj.get("hide_from_query", {})),
            refund_insufficient_balance=_flag(obj.get("refund_insufficient_balance", False)),
            repeat_answer=_repeat_answer(obj.get("repeat_answer", REPLAY)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoints": {name: dataclasses.asdict(f) for name, f in self.endpoints.items()},
            "notifications": dataclasses.asdict(self.notifications),
            "hide_from_query": dict(self.hide_from_query),
            "refund_insufficient_balance": self.refund_insufficient_balance,
            "repeat_answer": self.repeat_answer,
        }

    def endpoint(self, name: str) -> EndpointFault:
        return self.endpoints.get(name) or self.endpoints.get(ANY) or EndpointFault()

    def hidden_seconds(self, out_trade_no: str) -> float:
        lowered = {key.lower(): value for key, value in self.hide_from_query.items()}
        return lowered.get(out_trade_no.lower(), lowered.get(ANY, 0.0))


def decide(fault: EndpointFault, rng: random.Random, repeat_answer: str = REPLAY) -> EndpointDecision:
    """Always draw five numbers, so one request's fault never shifts the next one's."""
    error, drop, timeout, no_code, repeat = (rng.random() for _ in range(5))
    return EndpointDecision(
        error=error < fault.error_rate,
        drop=drop < fault.drop_rate,
        timeout=timeout < fault.timeout_rate,
        no_code=_no_code_body(no_code, fault.no_code_rate),
        repeat=RANDOM_REPEATS[int(repeat * len(RANDOM_REPEATS))] if repeat_answer == RANDOM else repeat_answer,
    )


def _no_code_body(draw: float, rate: float) -> Mapping[str, Any] | None:
    """Below ``rate``, the draw also picks which body (so no extra draw is needed)."""
    if draw >= rate:
        return None
    return NO_CODE_BODIES[min(int(draw / rate * len(NO_CODE_BODIES)), len(NO_CODE_BODIES) - 1)]


def _repeat_answer(value: Any) -> str:
    if value in (REPLAY, REPEAT_WITH_DATA, REPEAT_WITHOUT_DATA, RANDOM):
        return str(value)
    if isinstance(value, str) and value.startswith(REJECT_PREFIX):
        code = value.removeprefix(REJECT_PREFIX)
        if _GATEWAY_CODE.match(code) and code != "APPLY_SUCCESS":
            return value
    raise FaultSpecError(
        "repeat_answer must be replay, repeat_with_data, repeat_without_data, random or reject:CODE "
        "(CODE a gateway refusal code)"
    )


def _endpoints(obj: Any) -> dict[str, EndpointFault]:
    if not isinstance(obj, Mapping):
        raise FaultSpecError("endpoints must be an object")
    _no_unknown_keys(obj, {*ENDPOINTS, ANY}, "endpoints")
    built = {name: _build(EndpointFault, spec, f"endpoints.{name}") for name, spec in obj.items()}
    for name, fault in built.items():
        if not _ERROR_CODE.match(fault.error_code):
            raise FaultSpecError(f"endpoints.{name}.error_code must be a gateway code or http_5xx")
    return built


def _hidden(obj: Any) -> dict[str, float]:
    if not isinstance(obj, Mapping):
        raise FaultSpecError("hide_from_query must be an object of outTradeNo: seconds")
    return {str(key): _coerce(value, 0.0, f"hide_from_query.{key}") for key, value in obj.items()}


def _build(cls: type[_T], obj: Any, where: str) -> _T:
    if not isinstance(obj, Mapping):
        raise FaultSpecError(f"{where} must be an object")
    defaults = cls()
    names = {f.name for f in dataclasses.fields(defaults)}  # type: ignore[arg-type]
    _no_unknown_keys(obj, names, where)
    values = {k: _coerce(v, getattr(defaults, k), f"{where}.{k}") for k, v in obj.items()}
    return cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Match the default's type; rates live in [0, 1], counts and times are not negative."""
    if isinstance(default, bool):
        return _flag(value, where)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise FaultSpecError(f"{where} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise FaultSpecError(f"{where} must be a number")
    number = int(value) if isinstance(default, int) else float(value)
    if number < 0 or (where.endswith("_rate") and number > 1):
        raise FaultSpecError(f"{where} is out of range")
    return number


def _flag(value: Any, where: str = "refund_insufficient_balance") -> bool:
    if not isinstance(value, bool):
        raise FaultSpecError(f"{where} must be true or false")
    return value


def _no_unknown_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise FaultSpecError(f"{where}: unknown key {unknown[0]!r:.40}")
