"""Amounts: ``Decimal`` in the currency's major units, never float.

Checus (PayerMax) sends and expects major units ("yuan") as JSON numbers, with as many
decimals as the currency allows. ISO 4217 gives the default exponent (through Babel's
CLDR data); the gateway's own list differs for some currencies (IDR, KRW, TWD, ... take
none; BHD, KWD, JOD, OMR, TND take only two), and that list wins.

An amount with more decimals than its currency allows is refused, not rounded: rounding
money silently is how a refund ends up a cent above what was paid.
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, list_currencies

# WIRE.md §22: the gateway's exponents where they differ from ISO 4217.
GATEWAY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(("IDR", "KRW", "JPY", "TWD", "CLP", "COP", "PKR", "VND", "ISK", "PYG"), 0),
    **dict.fromkeys(("BHD", "KWD", "JOD", "OMR", "TND"), 2),
}
MAX_DIGITS = 18  # far above any real payment; bounds the work done on hostile input
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class AmountError(ValueError):
    """An amount or currency that cannot be money on the wire."""


@lru_cache(maxsize=512)
def currency_exponent(currency: str) -> int:
    """Decimal places the gateway allows for ``currency``."""
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise AmountError(f"currency must be three upper-case letters, got {currency!r:.16}")
    if currency in GATEWAY_EXPONENTS:
        return GATEWAY_EXPONENTS[currency]
    if currency not in _known_currencies():
        raise AmountError(f"unknown currency {currency}")
    return int(get_currency_precision(currency))


@lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def to_decimal(value: object) -> Decimal:
    """A finite Decimal from a Decimal, int or numeric string; floats and bools are refused."""
    if isinstance(value, bool | float):
        raise AmountError("amounts must not be floats or booleans")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            raise AmountError("amount string is empty or too long")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise AmountError(f"amount {text!r:.20} is not a number") from None
    else:
        raise AmountError(f"amount has type {type(value).__name__}")
    if not number.is_finite():
        raise AmountError("amount is not finite")
    return number


def parse_amount(value: object, currency: str, *, allow_zero: bool = False) -> Decimal:
    """Validate ``value`` as a positive amount in ``currency`` and quantize it to the exponent."""
    exponent = currency_exponent(currency)
    number = to_decimal(value)
    if number < 0 or (number == 0 and not allow_zero):
        raise AmountError("amount must be positive")
    exact = Context(prec=max(len(number.as_tuple().digits), 1), Emax=MAX_EMAX, Emin=MIN_EMIN)  # never rounds
    _sign, digits, exp = number.normalize(exact).as_tuple()
    if isinstance(exp, int) and -exp > exponent:
        raise AmountError(f"{currency} allows {exponent} decimal places")
    if len(digits) + max(exp if isinstance(exp, int) else 0, 0) > MAX_DIGITS:
        raise AmountError("amount is too large")
    return number.quantize(Decimal(1).scaleb(-exponent))


def format_amount(amount: Decimal, currency: str) -> str:
    """Human form with the currency's exponent, e.g. ``12.50 USD``."""
    exponent = currency_exponent(currency)
    return f"{amount.quantize(Decimal(1).scaleb(-exponent))} {currency}"


def to_minor(amount: Decimal, currency: str) -> int:
    """Exact integer minor units (the store's form); refuses anything that is not exact."""
    scaled = parse_amount(amount, currency, allow_zero=True).scaleb(currency_exponent(currency))
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    exponent = currency_exponent(currency)
    return Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))
