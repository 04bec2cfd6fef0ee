"""The byte-level JSON of the wire: one encoder, one strict decoder, RFC 3339 times.

Encoding is compact and keeps ``Decimal`` exact (amounts leave as JSON numbers, never via
float). Decoding reads numbers with a fraction as ``Decimal``, refuses ``NaN``/``Infinity``
and duplicate keys (a signed body with two values for one key means two things), numbers
``Decimal`` cannot hold, escaped lone surrogates and NUL (they cannot be stored or logged)
and nesting deeper than ``MAX_DEPTH`` (so the same bytes parse the same at any stack depth,
in the receiver and in a worker), and returns plain Python values for the typed readers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import simplejson

ACK_BODY = b'{"code":"SUCCESS","msg":"Success"}'
MAX_DEPTH = 64  # a notification nests 6 levels deep
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class WireFormatError(ValueError):
    """Bytes that are not the JSON object the protocol requires."""


def dumps(obj: Any) -> bytes:
    """Serialize once: these exact bytes are signed and sent."""
    text: str = simplejson.dumps(obj, use_decimal=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _no_constants(name: str) -> Any:
    raise WireFormatError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise WireFormatError(f"duplicate key {key!r:.40}")
        result[key] = value
    return result


def loads_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object body strictly; any problem is a ``WireFormatError``."""
    try:
        text = body.decode("utf-8")
        value = simplejson.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
        )
    except WireFormatError:
        raise
    except (UnicodeDecodeError, simplejson.JSONDecodeError, RecursionError, ValueError, ArithmeticError) as exc:
        raise WireFormatError(f"body is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise WireFormatError("body is not a JSON object")
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH or _UNSTORABLE_ESCAPE.search(body):
        _check_shape(value)
    return value


def _check_shape(value: object) -> None:
    """Refuse nesting past ``MAX_DEPTH``, lone surrogates and NUL (PostgreSQL's text cannot hold it),
    iteratively: no recursion limit."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise WireFormatError("a string holds a lone surrogate or NUL")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise WireFormatError(f"nested deeper than {MAX_DEPTH}")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def format_time(moment: datetime) -> str:
    """RFC 3339 with milliseconds, as the envelope's ``requestTime`` wants it."""
    if moment.tzinfo is None:
        raise ValueError("times on the wire must be timezone-aware")
    return moment.isoformat(timespec="milliseconds")


def format_utc(moment: datetime) -> str:
    """UTC with a ``Z``, as the gateway writes ``completeTime``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object) -> datetime | None:
    """Parse an RFC 3339 time; None when absent, empty or unreadable."""
    if not isinstance(value, str) or not value or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
