"""Hypothesis strategies for hostile signed notification bodies (reliability notes §5, goal G11).

Each body starts as a valid payment or refund notification (the shapes of
``tests/integration/test_receiver_harness.py``, WIRE.md §10/§13) about an order the store knows or
not, and is then corrupted: fields set to values of every JSON type (huge, negative, float and
scientific amounts, too many decimals, unicode with RTL marks, NUL, lone surrogates and emoji, very
long strings, nested garbage, deep nesting), fields removed, unknown fields added, appId/merchantNo
not ours, notifyTime stale or in the future, an unknown notifyType or status, the body sent to the
other endpoint; and at the byte level: a duplicate key, NaN/Infinity, invalid UTF-8, a byte-order
mark, a truncated body, a top level that is not an object. The signature is made by the test over
the final bytes, so every body is judged on its content.

Nothing here knows what the receiver should answer: that is the test's oracle.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import simplejson
from hypothesis import strategies as st

from tests.integration.test_receiver_harness import APP_ID, MERCHANT_NO, PAYMENT, REFUND, now, payment_note, refund_note

# The orders the rig stores before the run: outTradeNo → (amount, currency, save_card).
KNOWN_ORDERS: dict[str, tuple[str, str, bool]] = {
    "HB_ORDER_USD": ("100.00", "USD", False),
    "HB_ORDER_JPY": ("2500", "JPY", False),
    "HB_ORDER_KWD": ("7.25", "KWD", True),
}
PLACEHOLDER = re.compile(rb'"\\u0000RAW:([A-Za-z0-9+.-]+):(\d*)\\u0000"')  # replaced by raw JSON after serialization
MAX_BODY = 64 * 1024


class Hostile:
    """A body to sign and post to ``path``; ``label`` names its corruptions (for the figures)."""

    __slots__ = ("label", "path", "raw")

    def __init__(self, path: str, raw: bytes, label: str) -> None:
        self.path, self.raw, self.label = path, raw, label

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example: never a whole token id
        shown = re.sub(rb"PMTOKEN\w{4}\w*", b"PMTOKEN...", self.raw[:3000])
        return f"Hostile(path={self.path!r}, label={self.label!r}, {len(self.raw)} bytes: {shown!r})"


# -- values ----------------------------------------------------------------------------------------------

def raw(literal: str, depth: int | str = "") -> str:
    """A placeholder for JSON no Python value serializes to: NaN, Infinity, or nesting ``depth`` deep."""
    return f"\x00RAW:{literal}:{depth}\x00"


SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff", "\ude00\ud83d"])  # lone or reversed halves
ODD_TEXT = st.sampled_from([
    "", " ", "\x00", "NUL\x00inside", "\u202eRTL-override", "\u200f\u05e9\u05dc\u05d5\u05dd", "😀💳", "ß",
    "\ufeffBOM", "𝟙𝟘𝟘", "١٠٠", "\\", '"', "\n\t", "null", "true", "SUCCESS", "REFUND", APP_ID.lower(),
])
TEXT = st.one_of(st.text(max_size=24), ODD_TEXT, SURROGATES,
                 st.integers(70, 3000).map(lambda n: "x" * n),
                 st.integers(1, 60).map(lambda n: "é" * n))
HUGE_INTS = st.one_of(st.integers(10**17, 10**19), st.just(10**4000), st.just(-(10**300)))
INTEGERS = st.one_of(st.integers(-(2**63), 2**64), HUGE_INTS)
EXPONENTS = st.one_of(st.integers(-30, 30), st.sampled_from([999999, 1000000, -1000000, 10**18, 10**19, -(10**20)]))
SCIENTIFIC = st.builds(lambda m, e: raw(f"{m}E{e}"), st.integers(-999, 999), EXPONENTS)  # past Decimal's range too
DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    SCIENTIFIC,
    st.builds(lambda digits: Decimal("1." + "0" * digits + "1"), st.integers(1, 40)),  # 1.000…01
    st.sampled_from([Decimal("-0"), Decimal("0.00"), Decimal("100.00000000000001"), Decimal("-100.00")]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, DECIMALS, TEXT)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)


def _expand(match: re.Match[bytes]) -> bytes:
    literal, depth = match.group(1), int(match.group(2) or 0)
    if literal == b"list":
        return b"[" * depth + b"1" + b"]" * depth
    if literal == b"dict":
        return b'{"n":' * depth + b"1" + b"}" * depth
    return literal


DEEP = st.builds(raw, st.sampled_from(["list", "dict"]),
                 st.one_of(st.integers(1, 70), st.integers(900, 1000), st.integers(1001, 5000)))


def amount_forms(amount: Decimal) -> st.SearchStrategy[Any]:
    """One amount written the ways a gateway might: number, integer, string, scientific."""
    forms: list[Any] = [amount, str(amount), f" {amount} ", amount.normalize(), Decimal(f"{amount.scaleb(-2)}E+2")]
    if amount == amount.to_integral_value():
        forms.append(int(amount))
    return st.sampled_from(forms)


HOSTILE_AMOUNTS: st.SearchStrategy[Any] = st.one_of(
    DECIMALS, INTEGERS, TEXT, st.sampled_from([
        "NaN", "Infinity", "-Infinity", "1e2", "1_000", "0x10", "100.00 USD", "1" * 41, True, None, [], {},
        raw("NaN"), raw("Infinity"), raw("-Infinity"),
    ]),
)

# -- the valid starting points ---------------------------------------------------------------------------

UNKNOWN_REFS = st.one_of(st.sampled_from(["HB_UNKNOWN_1", "HB_UNKNOWN_2"]),
                         st.builds("HB_U{}".format, st.integers(0, 50)))
REFS = st.one_of(st.sampled_from(sorted(KNOWN_ORDERS)), st.sampled_from([n.lower() for n in KNOWN_ORDERS]),
                 UNKNOWN_REFS)
FRESH = st.integers(-4 * 60, 47 * 3600)  # seconds before now (negative: ahead of us)


@st.composite
def base_note(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    ref = draw(REFS)
    amount, currency, _save = KNOWN_ORDERS.get(ref.upper(), ("50.00", "USD", False))
    notify_time = now() - timedelta(seconds=draw(FRESH))
    if draw(st.integers(0, 9)) < 7:
        token = draw(st.sampled_from([None, "PMTOKEN20230710080439571142400031000"]))
        value = draw(amount_forms(Decimal(amount)) | amount_forms(Decimal(amount) + 1))
        note = payment_note(ref, status=draw(st.sampled_from(["SUCCESS", "FAILED", "CLOSED"])), amount=value,
                            currency=currency, notify_time=notify_time, token=token)
        return PAYMENT, note
    refund_no = draw(st.sampled_from(["HB_REFUND_1", "HB_REFUND_2", "hb_refund_1"]) | UNKNOWN_REFS)
    value = draw(amount_forms(Decimal(amount) / 10 if currency != "JPY" else Decimal(250)))
    note = refund_note(refund_no, out_trade_no=ref, status=draw(st.sampled_from(["REFUND_SUCCESS", "REFUND_FAILED"])),
                       amount=value, currency=currency, notify_time=notify_time)
    return REFUND, note


# -- corruptions of the value ----------------------------------------------------------------------------

PAYMENT_FIELDS = ("outTradeNo", "tradeToken", "totalAmount", "amount", "currency", "country", "status", "completeTime",
                  "paymentDetails", "reference", "resultCode", "resultMsg")
REFUND_FIELDS = ("outRefundNo", "refundTradeNo", "outTradeNo", "refundAmount", "totalAmount", "refundCurrency",
                 "currency", "status", "refundFinishTime", "resultMsg")
ENVELOPE_FIELDS = ("code", "msg", "keyVersion", "appId", "merchantNo", "notifyTime", "notifyType", "data")
DETAIL_PATHS = ("paymentMethodType", "paymentTokenID", "cardInfo", "cardInfo.cardOrg", "cardInfo.cardIdentifierNo",
                "cardInfo.paymentTokenID", "cardInfo.threeDSResult", "cardInfo.threeDSResult.authenticationStatus")
TIMES = st.one_of(
    st.integers(48 * 3600 + 600, 400 * 24 * 3600).map(lambda s: now() - timedelta(seconds=s)),  # stale
    st.integers(6 * 60, 400 * 24 * 3600).map(lambda s: now() + timedelta(seconds=s)),  # future
).map(lambda t: t.isoformat(timespec="milliseconds"))
ODD_TIMES = st.sampled_from(["", "yesterday", "2024-01-01T00:00:00", "2024-13-45T99:00:00Z",
                             "0001-01-01T00:00:00+23:59",
                             "9999-12-31T23:59:59-23:59", "2024-01-01T00:00:00.000+00:00" + "0" * 40, "1700000000"])


def _container(note: dict[str, Any], where: str, create: bool) -> dict[str, Any] | None:
    """The dict a field lives in: the envelope, ``data``, the first payment detail or a nested one."""
    if where == "envelope":
        return note
    data = note.get("data")
    if not isinstance(data, dict):
        return None
    if where == "data":
        return data
    details: Any = data.get("paymentDetails")
    if not (isinstance(details, list) and details and isinstance(details[0], dict)):
        if not create:
            return None
        details = data["paymentDetails"] = [{"paymentMethodType": "CARD"}]
    first: dict[str, Any] = details[0]
    return first


def _set(target: dict[str, Any], path: str, value: Any, *, delete: bool = False) -> None:
    *parents, last = path.split(".")
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    if delete:
        target.pop(last, None)
    else:
        target[last] = value


@st.composite
def corruption(draw: st.DrawFn, path: str, note: dict[str, Any]) -> str:  # noqa: PLR0911 - one return per kind
    """Corrupt ``note`` in place; returns a short name of what was done."""
    kind = draw(st.sampled_from(["set", "set", "delete", "extra", "amount", "amount", "identity", "time",
                                 "notifyType", "status", "currency", "deep"]))
    fields = PAYMENT_FIELDS if path == PAYMENT else REFUND_FIELDS
    if kind in ("set", "delete", "extra"):
        where = draw(st.sampled_from(["envelope", "data", "data", "detail"]))
        target = _container(note, where, create=kind != "delete")
        if target is None:
            return "noop"
        if kind == "extra":
            name = draw(st.one_of(st.sampled_from(["extra", "fees", "channelNo", "__proto__", "data2"]), TEXT))
            target.setdefault(name, draw(JUNK))
            return f"extra-{where}"
        name = draw(st.sampled_from({"envelope": ENVELOPE_FIELDS, "data": fields, "detail": DETAIL_PATHS}[where]))
        _set(target, name, None if kind == "delete" else draw(JUNK), delete=kind == "delete")
        return f"{kind}-{name}"
    data = note.get("data")
    if kind == "deep":
        _set(note if not isinstance(data, dict) else data, "deep", draw(DEEP))
        return "deep"
    if kind == "identity":
        field = draw(st.sampled_from(["appId", "merchantNo"]))
        ours = APP_ID if field == "appId" else MERCHANT_NO
        note[field] = draw(st.sampled_from([ours.lower(), f" {ours}", ours + "\x00", "SOMEONE_ELSE", ours]) | TEXT)
        return f"identity-{field}"
    if kind == "time":
        note["notifyTime"] = draw(TIMES | ODD_TIMES)
        return "time"
    if kind == "notifyType":
        note["notifyType"] = draw(st.sampled_from(["REFUND", "PAYMENT", "payment", "PAYOUT", "TOKEN", ""]) | TEXT)
        return "notifyType"
    if not isinstance(data, dict):
        return "noop"
    if kind == "status":
        data["status"] = draw(st.sampled_from(["PENDING", "REFUND_PENDING", "success", "PAID", "SUCCESS ",
                                               "REFUND_SUCCESS", "SUCCESS", "FAILED"]) | TEXT)
        return "status"
    if kind == "currency":
        field = "currency" if path == PAYMENT else draw(st.sampled_from(["refundCurrency", "currency"]))
        data[field] = draw(st.sampled_from(["usd", "XXY", "US", "USDX", "EUR", "JPY", "KWD", "BHD", "IDR", "ÜSD",
                                            "XAU", 840]) | TEXT)
        return "currency"
    field = draw(st.sampled_from(["totalAmount", "amount"] if path == PAYMENT else ["refundAmount", "totalAmount"]))
    data[field] = draw(HOSTILE_AMOUNTS)
    return f"amount-{field}"


# -- corruptions of the bytes ----------------------------------------------------------------------------


def serialize(note: Any, style: str) -> bytes:
    """UTF-8 as the gateway sends it, or every non-ASCII character escaped (PHP's ``json_encode``, and the
    only way to put a lone surrogate on the wire), optionally with ``/`` escaped as ``\\/``."""
    text: str = simplejson.dumps(note, use_decimal=True, separators=(",", ":"), ensure_ascii=style != "utf8")
    if style == "php":
        text = text.replace("/", "\\/")
    return PLACEHOLDER.sub(_expand, text.encode("utf-8"))


@st.composite
def byte_corruption(draw: st.DrawFn, raw: bytes) -> tuple[bytes, str]:  # noqa: PLR0911 - one return per kind
    kind = draw(st.sampled_from(["none"] * 6 + ["duplicate", "top", "utf8", "bom", "truncate", "space", "garbage"]))
    if kind == "duplicate":
        key = draw(st.sampled_from([b"code", b"notifyType", b"data", b"appId", b"fresh"]))
        return raw[:1] + b'"' + key + b'":"X",' + raw[1:], "bytes-duplicate"
    if kind == "top":
        return draw(st.sampled_from([b"[" + raw + b"]", b'"' + raw.replace(b'"', b"'") + b'"', b"null", b"42",
                                     b"true", b"[]", b"{}", b""])), "bytes-top"
    if kind == "utf8":
        at = draw(st.integers(1, max(1, len(raw) - 2)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + raw[at:], "bytes-utf8"
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw, "bytes-bom"
    if kind == "truncate":
        return raw[:draw(st.integers(0, max(0, len(raw) - 1)))], "bytes-truncate"
    if kind == "space":
        return b" \r\n\t" + raw + b"\n ", "bytes-space"
    if kind == "garbage":
        return raw + draw(st.sampled_from([b"x", b"}", b",", b"{}", b"\x00"])), "bytes-garbage"
    return raw, ""


@st.composite
def hostile_bodies(draw: st.DrawFn) -> Hostile:
    path, note = draw(base_note())
    labels = [draw(corruption(path, note)) for _ in range(draw(st.integers(0, 3)))]
    if draw(st.integers(0, 19)) == 0:
        path = REFUND if path == PAYMENT else PAYMENT
        labels.append("other-endpoint")
    style = draw(st.sampled_from(["utf8", "utf8", "ascii", "php"]))
    if any(s in repr(note) for s in ("\\ud8", "\\ud9", "\\uda", "\\udb", "\\udc", "\\udd", "\\ude", "\\udf")):
        style = "ascii"  # a lone surrogate exists on the wire only escaped
    raw, tail = draw(byte_corruption(serialize(note, style)))
    return Hostile(path, raw, "+".join(sorted(filter(None, [*labels, tail]))) or "valid")
