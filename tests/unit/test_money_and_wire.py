"""Amounts are exact Decimals with each currency's exponent; the wire JSON is strict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.gateway.money import AmountError, currency_exponent, format_amount, parse_amount
from worker.gateway.wire import WireFormatError, dumps, format_time, format_utc, loads_object, parse_time


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("USD", 2), ("SAR", 2), ("JPY", 0), ("IDR", 0), ("KRW", 0), ("TWD", 0), ("BHD", 2), ("KWD", 2), ("EUR", 2)],
)
def test_gateway_exponents_override_iso(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["usd", "US", "ZZZ", "", "USDX"])
def test_unknown_or_malformed_currency_is_refused(currency: str) -> None:
    with pytest.raises(AmountError):
        currency_exponent(currency)


def test_strings_ints_and_decimals_are_accepted_and_quantized() -> None:
    assert parse_amount("10.5", "USD") == Decimal("10.50")
    assert str(parse_amount(100, "IDR")) == "100"
    assert str(parse_amount(Decimal("1.000"), "USD")) == "1.00"


@pytest.mark.parametrize(
    ("value", "currency"),
    [(1.5, "USD"), (True, "USD"), ("1.001", "USD"), ("0.5", "JPY"), ("1.234", "BHD"), (0, "USD"),
     (-1, "USD"), ("NaN", "USD"), ("Infinity", "USD"), ("abc", "USD"), ("1e40", "USD"), (None, "USD"),
     # found by tests/reliability/test_hostile_bodies.py: past Decimal's exponent range (was decimal.Overflow,
     # a 500 at the receiver), and more digits than Decimal's 28-digit context (was rounded to 1.00 and applied)
     (Decimal("1E+1000000"), "USD"), (Decimal("1.00000000000000000000000000001"), "USD"),
     ("100.000000000000000000000000001", "USD")],
)
def test_bad_amounts_are_refused_not_rounded(value: object, currency: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(value, currency)


def test_zero_is_allowed_only_when_asked() -> None:
    assert parse_amount(0, "USD", allow_zero=True) == Decimal("0.00")


def test_format_amount_shows_the_exponent() -> None:
    assert format_amount(Decimal("5"), "USD") == "5.00 USD"


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999"), places=2))
def test_decimal_survives_the_wire_exactly(amount: Decimal) -> None:
    """dumps/loads never passes an amount through float."""
    body = dumps({"totalAmount": amount})
    back = loads_object(body)["totalAmount"]
    assert Decimal(back) == amount


def test_dumps_is_compact_utf8_and_keeps_slashes() -> None:
    assert dumps({"a": "é/b", "n": Decimal("1.50")}) == '{"a":"é/b","n":1.50}'.encode()


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"nul", b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1,"a":2}', b"\xff\xfe", b'{"a":' * 5000,
     # found by tests/reliability/test_hostile_bodies.py (each was a 500 at the receiver, or acknowledged and
     # then thrown away by the worker, whose deeper stack could not parse what the receiver had):
     b'{"a":1E+99999999999999999999}', b'{"a":"\\ud800"}', b'{"\\udfff":1}', b'{"a":["x\\udbff"]}',
     b'{"a":' + b"[" * 64 + b"]" * 64 + b"}", b'{"a":' + b"[" * 985 + b"]" * 985 + b"}",
     # NUL: PostgreSQL's text columns refuse it, so a kept notification could never be stored (503 for ever)
     b'{"a":"x\\u0000y"}', b'{"\\u0000":1}'],
)
def test_strict_decoder_refuses(body: bytes) -> None:
    with pytest.raises(WireFormatError):
        loads_object(body)


def test_strict_decoder_takes_escaped_pairs_and_nesting_up_to_its_bound() -> None:
    assert loads_object(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert loads_object(b'{"a":' + b"[" * 63 + b"]" * 63 + b"}")["a"] is not None


def test_time_formats() -> None:
    moment = datetime(2022, 1, 17, 8, 4, 13, 879000, tzinfo=UTC)
    assert format_time(moment) == "2022-01-17T08:04:13.879+00:00"
    assert format_utc(moment.astimezone(timezone(timedelta(hours=8)))) == "2022-01-17T08:04:13.879Z"
    assert parse_time("2023-10-20T03:28:23.092Z") == datetime(2023, 10, 20, 3, 28, 23, 92000, tzinfo=UTC)
    assert parse_time("2023-10-20T03:28:23") is None  # naive: refused
    assert parse_time(12) is None
    with pytest.raises(ValueError, match="timezone"):
        format_time(datetime(2022, 1, 1))
