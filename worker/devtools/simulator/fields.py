"""Readers for the fields of a request's ``data``, failing the way the gateway does.

Each reader raises ``Rejected`` naming the field in ``msg``. Amounts follow WIRE.md §26: a
JSON number or a numeric string; an unknown currency is ``CURRENCY_INVALID``, a value not
above zero ``PARAMS_INVALID``, and more decimals than the currency allows ``AMOUNT_INVALID``
(never rounded: rounding is how a refund ends up a cent above what was paid).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from worker.devtools.simulator.envelope import Rejected
from worker.gateway.money import AmountError, currency_exponent, parse_amount, to_decimal

_URL = re.compile(r"https?://\S+", re.IGNORECASE)


def text(data: dict[str, Any], name: str, *, max_len: int = 256, where: str = "") -> str:
    """A required non-empty string."""
    value = optional_text(data, name, max_len=max_len, where=where)
    if value is None:
        raise Rejected("PARAMS_INVALID", f"{where}{name} is required")
    return value


def optional_text(data: dict[str, Any], name: str, *, max_len: int = 256, where: str = "") -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Rejected("PARAMS_INVALID", f"{where}{name} must be a string")
    if len(value) > max_len:
        raise Rejected("PARAMS_INVALID", f"{where}{name} is longer than {max_len}")
    return value


def matching(data: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = text(data, name, max_len=1024)
    if not pattern.fullmatch(value):
        raise Rejected("PARAMS_INVALID", f"{name} is invalid")
    return value


def url(data: dict[str, Any], name: str, *, max_len: int = 256) -> str | None:
    """An optional http(s) URL (notification targets)."""
    value = optional_text(data, name, max_len=max_len)
    if value is not None and not _URL.fullmatch(value):
        raise Rejected("PARAMS_INVALID", f"{name} is invalid")
    return value


def one_of(data: dict[str, Any], name: str, allowed: tuple[str, ...], *, where: str = "") -> str:
    value = text(data, name, where=where)
    if value not in allowed:
        raise Rejected("PARAMS_INVALID", f"{where}{name} must be one of {', '.join(allowed)}")
    return value


def nested(data: dict[str, Any], name: str, *, where: str = "") -> dict[str, Any]:
    """An optional object; absent reads as empty."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected("PARAMS_INVALID", f"{where}{name} must be an object")
    return value


def flag(value: object) -> bool:
    """Checus pages quote ``"true"``, the PayerMax schema a boolean: both mean yes."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def currency(data: dict[str, Any], name: str) -> str:
    value = text(data, name, max_len=8)
    try:
        currency_exponent(value)
    except AmountError:
        raise Rejected("CURRENCY_INVALID", f"{name} is invalid") from None
    return value


def amount(data: dict[str, Any], name: str, currency_code: str) -> Decimal:
    raw = data.get(name)
    if raw is None or raw == "":
        raise Rejected("PARAMS_INVALID", f"{name} is required")
    try:
        number = to_decimal(raw)
    except AmountError:
        raise Rejected("PARAMS_INVALID", f"{name} is not a number") from None
    if number <= 0:
        raise Rejected("PARAMS_INVALID", f"{name} must be greater than 0")
    try:
        return parse_amount(number, currency_code)
    except AmountError:
        raise Rejected("AMOUNT_INVALID", f"{name} has more decimals than {currency_code} allows") from None


def expire_seconds(data: dict[str, Any], default: int) -> int:
    """``expireTime`` in seconds, clamped to [1800, 86400] as the gateway "forcibly corrects".

    It is a *string* in the OpenAPI schema: a JSON number is refused, as a schema-checking
    gateway would, so a client that sends one finds out here and not in production.
    """
    raw = data.get("expireTime")
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise Rejected("PARAMS_INVALID", "expireTime must be a string of seconds")
    try:
        seconds = int(raw.strip())
    except ValueError:
        raise Rejected("PARAMS_INVALID", "expireTime must be seconds") from None
    return min(max(seconds, 1800), 86400)
