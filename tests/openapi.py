"""Validate wire bodies against PayerMax's official OpenAPI subset (WIRE.md source P1).

The whole document is registered with ``referencing`` so the percent-encoded
``$ref: "#/components/schemas/..."`` pointers resolve. Path keys are endpoint names:
``orderAndPay`` (or ``orderAndPay:hosted``) is the Hosted_Checkout form, ``orderAndPay:direct``
the Direct_Payment / token form; notification kinds are ``payment`` and ``refund``.

Three deliberate departures from the raw document, each because the document is wrong about
the gateway rather than because the body is:

- Enum strings are compared without surrounding whitespace: the source has
  ``"REFUND_PENDING\\t"`` and ``"N "`` where the wire has ``REFUND_PENDING`` and ``N``.
- Error answers (``code`` other than ``APPLY_SUCCESS``) omit ``data`` (WIRE.md §5), or carry a
  summary of the existing order or refund (``ORDER_REPEAT``), so for them ``data`` and its
  ``required`` list are not enforced.
- Fields the gateway leaves out in some states are not required (WIRE.md §9, §12):
  ``refundQuery`` ``refundFinishTime`` (terminal refunds only) and ``orderQuery``
  ``cashierCountry`` (hosted successes only).

Bodies parsed with ``Decimal`` amounts are accepted: they are re-read with plain ``json``
first, so a JSON number is a number whatever the parser made of it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import simplejson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# A copy of ../shared/checus/payermax-openapi-subset.json (PayerMax's public api.json, trimmed),
# kept with the tests so they run anywhere; test_openapi_copy checks it against the original.
SPEC_PATH = Path(__file__).parent / "data" / "payermax-openapi-subset.json"
BASE_URI = "urn:payermax-openapi-subset"
GATEWAY = "/aggregate-pay/api/gateway/"
PATHS = {
    "orderAndPay": GATEWAY + "orderAndPay",
    "orderAndPay:hosted": GATEWAY + "orderAndPay",
    "orderAndPay:direct": GATEWAY + "orderAndPay/delSuffixStart1",
    "orderQuery": GATEWAY + "orderQuery",
    "refund": GATEWAY + "refund",
    "refundQuery": GATEWAY + "refundQuery",
    "inquirePaymentToken": GATEWAY + "inquirePaymentToken",
    "removePaymentToken": GATEWAY + "removePaymentToken",
}
NOTIFICATION_PATHS = {"payment": "/collectResultNotifyUrl", "refund": "/RefundResultNotifyUrl"}
OMITTED_BY_GATEWAY = {"refundQuery": ("refundFinishTime",), "orderQuery": ("cashierCountry",)}
JSON = "application~1json"


class SchemaMismatch(AssertionError):
    """A body that does not match the official schema; lists every problem found."""


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SPEC_PATH.read_text("utf-8"))
    _strip_enums(document)
    return document


def _strip_enums(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("enum"), list):
            node["enum"] = [v.strip() if isinstance(v, str) else v for v in node["enum"]]
        for value in node.values():
            _strip_enums(value)
    elif isinstance(node, list):
        for value in node:
            _strip_enums(value)


def _pointer(path: str, *tail: str) -> str:
    escaped = path.replace("~", "~0").replace("/", "~1")
    return "/".join(("#", "paths", escaped, "post", *tail))


@cache
def _validator(path: str, part: Literal["request", "response"], relaxed: tuple[str, ...]) -> Draft202012Validator:
    """A validator for one schema of the document, with some ``required`` entries dropped.

    ``relaxed`` holds "data" (no ``data`` required at the top, nor anything inside it) and/or
    names of ``data`` fields that need not be present.
    """
    document = copy.deepcopy(_document())
    tail = (
        ("requestBody", "content", JSON, "schema")
        if part == "request"
        else ("responses", "200", "content", JSON, "schema")
    )
    schema = document["paths"][path]["post"]
    for step in tail:
        schema = schema[step.replace("~1", "/")]
    _relax(schema, relaxed)
    registry: Registry[Any] = Registry().with_resource(
        BASE_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": BASE_URI + _pointer(path, *tail)}, registry=registry)


def _relax(schema: dict[str, Any], relaxed: tuple[str, ...]) -> None:
    data = schema.get("properties", {}).get("data", {})
    if "data" in relaxed:
        schema["required"] = [name for name in schema.get("required", []) if name != "data"]
        data.pop("required", None)
    elif isinstance(data, dict) and "required" in data:
        data["required"] = [name for name in data["required"] if name not in relaxed]


def _plain(body: Any) -> Any:
    """Decimal-free JSON values, as a plain ``json`` parser would have produced them."""
    if isinstance(body, bytes | str):
        return json.loads(body)
    return json.loads(simplejson.dumps(body, use_decimal=True))


def _check(validator: Draft202012Validator, body: Any, what: str) -> None:
    errors = sorted(validator.iter_errors(_plain(body)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]
        raise SchemaMismatch(f"{what} does not match the OpenAPI subset:\n  " + "\n  ".join(lines))


def _path(path_key: str) -> str:
    try:
        return PATHS[path_key]
    except KeyError:
        raise KeyError(f"unknown path key {path_key!r}; known: {', '.join(PATHS)}") from None


def validate_response(path_key: str, body: Any) -> None:
    """Raise ``SchemaMismatch`` unless ``body`` (dict, or raw JSON bytes) is a valid answer."""
    plain = _plain(body)
    relaxed: tuple[str, ...] = OMITTED_BY_GATEWAY.get(path_key, ())
    if isinstance(plain, dict) and plain.get("code") != "APPLY_SUCCESS":
        relaxed = ("data",)
    _check(_validator(_path(path_key), "response", relaxed), plain, f"{path_key} response")


def validate_request(path_key: str, body: Any) -> None:
    """Raise ``SchemaMismatch`` unless ``body`` is a valid request envelope."""
    _check(_validator(_path(path_key), "request", ()), body, f"{path_key} request")


def validate_notification(kind: Literal["payment", "refund"], body: Any) -> None:
    """Raise ``SchemaMismatch`` unless ``body`` is a valid payment or refund notification."""
    _check(_validator(NOTIFICATION_PATHS[kind], "request", ()), body, f"{kind} notification")


def path_key_for(endpoint: str, request_data: Mapping[str, Any]) -> str:
    """The path key whose schema an answer to ``endpoint`` must match."""
    if endpoint == "orderAndPay" and request_data.get("integrate") == "Direct_Payment":
        return "orderAndPay:direct"
    return endpoint


def notification_kind(body: Mapping[str, Any]) -> Literal["payment", "refund"]:
    return "refund" if body.get("notifyType") == "REFUND" else "payment"
