"""Mutations of a valid signed notification, for the signature fuzz (target 5).

A ``Sample`` is what Checus would send: a path, body bytes and the one ``sign`` value that
verifies them. ``mutate`` turns it into ``PER_SAMPLE`` requests that must all be refused,
drawn from the ``CATALOGUE`` (each entry is a mutation class, how many of it each sample
gets, and the reply it must get):

- body: bit and byte flips, inserted and deleted bytes, truncations, bytes before or after
  the JSON, tampered fields, and re-serializations that keep the JSON meaning (key order,
  whitespace, ``\\/``, ``\\uXXXX``, number spellings such as ``100.0`` for ``100.00``), all
  sent with the genuine ``sign``;
- header: ``sign`` dropped, empty, repeated with the same or other values, split in two;
- Base64: URL-safe alphabet, padding removed or added, whitespace or a folded line inside,
  non-canonical trailing bits, one byte short or long, a flipped bit, hex, lower case;
- key: another RSA key (2048 and 3072 bits), the signature of another valid body, of a
  prefix or an extension of the body, of a re-serialization, other hashes and PSS padding
  with the platform key itself.

Leading or trailing whitespace around the value is not a mutation: a field value excludes
it (RFC 9110 §5.5), so ``sign:  X`` carries the genuine value ``X``. Whitespace *inside* the
value is one.

Every mutant is checked to differ from the genuine request (body or ``sign`` lines), and a
re-serialization to mean the same JSON as the body it re-spells. Error messages name the
mutation and the sample, never body bytes or ``sign`` values.
"""

from __future__ import annotations

import base64
import os
import random
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import simplejson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from worker.gateway.signing import Signer
from worker.gateway.wire import loads_object

PER_SAMPLE = 100
BAD = (401, "bad_signature")
UNSIGNED = (401, "unsigned")
HTTP_PARSER = (400, "http")  # refused by the HTTP parser before the receiver sees it: a folded header line


def fuzz_seed() -> int:
    """``CHECUS_FUZZ_SEED`` replays the mutation plan; otherwise a fresh seed, printed with the results."""
    raw = os.environ.get("CHECUS_FUZZ_SEED", "").strip()
    return int(raw) if raw else secrets.randbelow(2**31)


@dataclass(frozen=True, slots=True)
class Sample:
    """A valid signed notification: ``sign`` verifies ``body`` under the platform key."""

    label: str  # e.g. "payment SUCCESS JPY token known"
    path: str
    body: bytes
    sign: str


@dataclass(frozen=True, slots=True)
class Mutant:
    kind: str
    family: str
    sample: int
    path: str
    body: bytes
    signs: tuple[str, ...]  # the ``sign`` header lines, in order (none: no header)
    expect: tuple[int, str]


@dataclass(slots=True, kw_only=True)
class Keys:
    """The signing material mutations draw on: the platform's own key and strangers'."""

    platform: rsa.RSAPrivateKey
    strangers: Sequence[Signer]  # 2048-bit keys the receiver does not trust
    big_stranger: Signer  # a 3072-bit one

    def sign(self, body: bytes, algorithm: hashes.HashAlgorithm | None = None,
             scheme: padding.AsymmetricPadding | None = None) -> str:
        """The platform key's signature of ``body``, with another hash or padding than the protocol's."""
        raw = self.platform.sign(body, scheme or padding.PKCS1v15(), algorithm or hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a mutator gets: the sample, the others (for their signatures), keys and the plan's RNG."""

    index: int
    sample: Sample
    samples: Sequence[Sample]
    keys: Keys
    rng: random.Random

    def other(self) -> Sample:
        j = self.rng.randrange(len(self.samples) - 1)
        return self.samples[j + (j >= self.index)]


Result = tuple[bytes, tuple[str, ...]]  # body, sign lines
Mutator = Callable[[Ctx], Result]


# -- body mutations (sent with the genuine sign) ------------------------------------------------------------


def _body(change: Callable[[bytes, random.Random], bytes]) -> Mutator:
    return lambda c: (change(c.sample.body, c.rng), (c.sample.sign,))


def flip_bit(body: bytes, rng: random.Random) -> bytes:
    return _xor(body, rng.randrange(len(body)), 1 << rng.randrange(8))


def flip_bytes(body: bytes, rng: random.Random) -> bytes:
    for at in rng.sample(range(len(body)), rng.randint(2, 8)):
        body = _xor(body, at, rng.randint(1, 255))
    return body


def _xor(body: bytes, at: int, mask: int) -> bytes:
    return body[:at] + bytes([body[at] ^ mask]) + body[at + 1:]


def insert_byte(body: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(body) + 1)
    return body[:at] + bytes([rng.randrange(256)]) + body[at:]


def delete_byte(body: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(body))
    return body[:at] + body[at + 1:]


def truncate(body: bytes, rng: random.Random) -> bytes:
    """A prefix: the edges (nothing, one byte, all but the last, half) as often as any other length."""
    size = rng.choice([0, 1, len(body) - 1, len(body) // 2, rng.randrange(len(body))])
    return body[:size]


SUFFIXES = (b"\n", b"\r\n", b" ", b"\t", b"\x00", b"}", b"{}", b",", b"0")
PREFIXES = (b"\xef\xbb\xbf", b" ", b"\n", b"\t", b"\r\n")


def append(body: bytes, rng: random.Random) -> bytes:
    return body + rng.choice(SUFFIXES)


def prepend(body: bytes, rng: random.Random) -> bytes:
    return rng.choice(PREFIXES) + body


def tamper_field(body: bytes, rng: random.Random) -> bytes:
    """A change of meaning an attacker would want: the status, the amount, the reference, the time, the key version."""
    return rng.choice([_restatus, _reprice, _rename, _retime, _rekey])(body)


STATUS_SWAPS = {b'"SUCCESS"': b'"FAILED"', b'"FAILED"': b'"SUCCESS"', b'"CLOSED"': b'"SUCCESS"',
                b'"REFUND_SUCCESS"': b'"REFUND_FAILED"', b'"REFUND_FAILED"': b'"REFUND_SUCCESS"'}


def _restatus(body: bytes) -> bytes:
    old, new = next((k, v) for k, v in STATUS_SWAPS.items() if b'"status":' + k in body)
    return body.replace(b'"status":' + old, b'"status":' + new, 1)


def _reprice(body: bytes) -> bytes:
    return AMOUNT.sub(lambda m: m.group(1) + str(Decimal(m.group(2).decode()) + 1).encode(), body, count=1)


def _rename(body: bytes) -> bytes:
    return re.sub(rb'("out(?:Trade|Refund)No":"[^"]*)"', rb'\g<1>9"', body, count=1)


def _rekey(body: bytes) -> bytes:
    """An unknown ``keyVersion``: the genuine signature does not cover it."""
    return body.replace(b'"keyVersion":"1"', b'"keyVersion":"2"', 1)


def _retime(body: bytes) -> bytes:
    match = re.search(rb'"notifyTime":"[^"]*?T\d\d:\d\d:(\d)', body)
    if match is None:
        raise ValueError("no notifyTime to change")
    return body[:match.start(1)] + str((int(match.group(1)) + 1) % 6).encode() + body[match.end(1):]


AMOUNT = re.compile(rb'("(?:totalAmount|refundAmount)":)(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


# -- re-serializations: same JSON meaning, other bytes ------------------------------------------------------


def _parse(body: bytes) -> Any:
    return simplejson.loads(body.decode("utf-8"), use_decimal=True)


def _dump(value: Any, **options: Any) -> bytes:
    options.setdefault("separators", (",", ":"))
    options.setdefault("ensure_ascii", False)
    text: str = simplejson.dumps(value, use_decimal=True, **options)
    return text.encode("utf-8")


def _meaning_kept(change: Callable[[bytes, random.Random], bytes]) -> Mutator:
    def mutate(c: Ctx) -> Result:
        body = change(c.sample.body, c.rng)
        if loads_object(body) != loads_object(c.sample.body):
            raise ValueError(f"{change.__name__} changed the meaning of sample {c.index}")
        return body, (c.sample.sign,)

    return mutate


def reorder_keys(body: bytes, rng: random.Random) -> bytes:
    value = _parse(body)
    how = rng.choice(["reverse", "reverse data", "sort", "shuffle"])
    if how == "reverse data":
        value["data"] = dict(reversed(list(value["data"].items())))
        return _dump(value)
    if how == "sort":
        return _dump(value, sort_keys=True)
    items = list(value.items())
    if how == "shuffle":
        while list(value) == [k for k, _ in items]:
            rng.shuffle(items)
    return _dump(dict(items if how == "shuffle" else reversed(items)))


def respace(body: bytes, rng: random.Random) -> bytes:
    how: dict[str, Any] = rng.choice(RESPACINGS)
    return _dump(_parse(body), **how)


RESPACINGS: tuple[dict[str, Any], ...] = (
    {"indent": 1}, {"indent": "\t"}, {"indent": 4}, {"separators": (", ", ": ")}, {"separators": (",", ": ")},
    {"separators": (" ,", " : ")})


def escape_slashes(body: bytes, rng: random.Random) -> bytes:
    """``/`` as ``\\/`` (PHP's json_encode): all of them, or one."""
    if rng.random() < 0.5:
        return body.replace(b"/", b"\\/")
    at = rng.choice([m.start() for m in re.finditer(rb"/", body)])
    return body[:at] + b"\\" + body[at:]


def escape_unicode(body: bytes, rng: random.Random) -> bytes:
    """Non-ASCII text as ``\\uXXXX``, or an ASCII letter of a key or string as ``\\u00XX`` (either case of hex)."""
    if rng.random() < 0.4 and max(body) > 0x7F:
        return _dump(_parse(body), ensure_ascii=True)
    at = rng.choice([m.start(1) for m in re.finditer(rb'"([A-Za-z])', body)])
    escaped = f"\\u{body[at]:04x}" if rng.random() < 0.5 else f"\\u{body[at]:04X}"
    return body[:at] + escaped.encode() + body[at + 1:]


def respell_number(body: bytes, rng: random.Random) -> bytes:
    match = AMOUNT.search(body)
    if match is None:
        raise ValueError("no amount to re-spell")
    text = match.group(2).decode()
    number = Decimal(text)
    spellings = {text + "0" if "." in text else text + ".0", f"{number:E}", f"{number:e}".replace("+", ""),
                 f"{number.normalize():f}", f"{number * 10:f}e-1", f"{number:.6f}"}
    spelling = rng.choice(sorted(spellings - {text}))
    return body[:match.start(2)] + spelling.encode() + body[match.end(2):]


# -- the sign header -----------------------------------------------------------------------------------------


def _signs(make: Callable[[Ctx], tuple[str, ...]]) -> Mutator:
    return lambda c: (c.sample.body, make(c))


def stranger_sign(c: Ctx) -> str:
    return c.rng.choice(c.keys.strangers).sign(c.sample.body)


def duplicated_same(c: Ctx) -> tuple[str, ...]:
    return (c.sample.sign,) * c.rng.choice([2, 3])


def genuine_first(c: Ctx) -> tuple[str, ...]:
    return c.sample.sign, c.rng.choice([stranger_sign(c), c.other().sign, "A" * len(c.sample.sign)])


def genuine_last(c: Ctx) -> tuple[str, ...]:
    return c.rng.choice([stranger_sign(c), c.other().sign, "", "x"]), c.sample.sign


def split_in_two(c: Ctx) -> tuple[str, ...]:
    at = c.rng.randrange(1, len(c.sample.sign))
    return c.sample.sign[:at], c.sample.sign[at:]


# -- Base64 spellings of the genuine signature -----------------------------------------------------------------


def _b64(change: Callable[[str, random.Random], str]) -> Mutator:
    return lambda c: (c.sample.body, (change(c.sample.sign, c.rng),))


def urlsafe(sign: str, _rng: random.Random) -> str:
    """The URL-safe alphabet (and no padding in the rare case the signature has no ``+`` or ``/``)."""
    spelled = sign.replace("+", "-").replace("/", "_")
    return spelled if spelled != sign else spelled.rstrip("=")


def unpadded(sign: str, rng: random.Random) -> str:
    return sign.rstrip("=") if rng.random() < 0.5 else sign[:-1]


def overpadded(sign: str, rng: random.Random) -> str:
    return sign + "=" * rng.randint(1, 2)


def _inside(sign: str, rng: random.Random, text: str) -> str:
    at = rng.randrange(1, len(sign) - 2)
    return sign[:at] + text + sign[at:]


def space_inside(sign: str, rng: random.Random) -> str:
    return _inside(sign, rng, rng.choice([" ", "  "]))


def tab_inside(sign: str, rng: random.Random) -> str:
    return _inside(sign, rng, "\t")


def folded(sign: str, rng: random.Random) -> str:
    """A newline inside, as a folded (obs-fold) header line: the only way a newline fits in a header."""
    return _inside(sign, rng, "\r\n ")


def noncanonical_bits(sign: str, _rng: random.Random) -> str:
    """Same bytes when decoded leniently: the unused low bits of the last character set."""
    stem = sign.rstrip("=")
    unused = {0: 0, 1: 2, 2: 4}[sign.count("=")]  # bits of the last character that encode nothing
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(stem[-1])
    if unused == 0:  # no spare bits: the nearest lenient variant is a character after the padding
        return sign + "A"
    return stem[:-1] + alphabet[last ^ ((1 << unused) - 1)] + sign[len(stem):]


def _raw(change: Callable[[bytes, random.Random], bytes]) -> Callable[[str, random.Random], str]:
    def spell(sign: str, rng: random.Random) -> str:
        return base64.b64encode(change(base64.b64decode(sign), rng)).decode("ascii")

    spell.__name__ = change.__name__
    return spell


def one_byte_short(raw: bytes, rng: random.Random) -> bytes:
    return raw[1:] if rng.random() < 0.5 else raw[:-1]


def one_byte_long(raw: bytes, rng: random.Random) -> bytes:
    return raw + b"\0" if rng.random() < 0.5 else b"\0" + raw


def hex_spelled(sign: str, _rng: random.Random) -> str:
    return base64.b64decode(sign).hex()


def lower_cased(sign: str, _rng: random.Random) -> str:
    return sign.lower()


def double_encoded(sign: str, _rng: random.Random) -> str:
    return base64.b64encode(sign.encode("ascii")).decode("ascii")


# -- other signatures --------------------------------------------------------------------------------------------


def by_stranger(c: Ctx) -> Result:
    return c.sample.body, (stranger_sign(c),)


def by_big_stranger(c: Ctx) -> Result:
    return c.sample.body, (c.keys.big_stranger.sign(c.sample.body),)


def of_other_body(c: Ctx) -> Result:
    return c.sample.body, (c.other().sign,)


def of_prefix(c: Ctx) -> Result:
    body = c.sample.body
    return body, (c.keys.sign(body[:c.rng.choice([len(body) - 1, len(body) // 2, c.rng.randrange(len(body))])]),)


def of_extension(c: Ctx) -> Result:
    return c.sample.body, (c.keys.sign(c.sample.body + c.rng.choice(SUFFIXES)),)


def of_reserialization(c: Ctx) -> Result:
    return c.sample.body, (c.keys.sign(_dump(_parse(c.sample.body), sort_keys=True, separators=(", ", ": "))),)


def other_hash(c: Ctx) -> Result:
    algorithm = c.rng.choice([hashes.SHA1(), hashes.SHA384(), hashes.SHA512(), hashes.SHA224()])  # noqa: S303 - forgeries
    return c.sample.body, (c.keys.sign(c.sample.body, algorithm),)


def pss(c: Ctx) -> Result:
    scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    return c.sample.body, (c.keys.sign(c.sample.body, scheme=scheme),)


# -- the catalogue ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutation:
    kind: str
    family: str
    count: int  # per sample
    make: Mutator
    expect: tuple[int, str] = BAD


CATALOGUE: tuple[Mutation, ...] = (
    Mutation("bit flip", "body", 10, _body(flip_bit)),
    Mutation("byte flips (2-8)", "body", 6, _body(flip_bytes)),
    Mutation("byte inserted", "body", 2, _body(insert_byte)),
    Mutation("byte deleted", "body", 2, _body(delete_byte)),
    Mutation("truncated", "body", 8, _body(truncate)),
    Mutation("bytes appended", "body", 3, _body(append)),
    Mutation("bytes prepended", "body", 2, _body(prepend)),
    Mutation("field tampered", "body", 4, _body(tamper_field)),
    Mutation("keys reordered", "reserialized", 4, _meaning_kept(reorder_keys)),
    Mutation("whitespace", "reserialized", 5, _meaning_kept(respace)),
    Mutation("slash escaped", "reserialized", 2, _meaning_kept(escape_slashes)),
    Mutation("unicode escaped", "reserialized", 3, _meaning_kept(escape_unicode)),
    Mutation("number respelled", "reserialized", 5, _meaning_kept(respell_number)),
    Mutation("sign dropped", "header", 1, _signs(lambda _c: ()), UNSIGNED),
    Mutation("sign empty", "header", 2, _signs(lambda c: (c.rng.choice(["", " ", "   "]),)), UNSIGNED),
    Mutation("sign repeated, same value", "header", 2, _signs(duplicated_same)),
    Mutation("sign repeated, genuine first", "header", 2, _signs(genuine_first)),
    Mutation("sign repeated, genuine last", "header", 2, _signs(genuine_last)),
    Mutation("sign split over two lines", "header", 1, _signs(split_in_two)),
    Mutation("url-safe alphabet", "base64", 1, _b64(urlsafe)),
    Mutation("padding removed", "base64", 2, _b64(unpadded)),
    Mutation("padding added", "base64", 2, _b64(overpadded)),
    Mutation("space inside", "base64", 2, _b64(space_inside)),
    Mutation("tab inside", "base64", 1, _b64(tab_inside)),
    Mutation("newline inside (folded line)", "base64", 1, _b64(folded), HTTP_PARSER),
    Mutation("non-canonical trailing bits", "base64", 1, _b64(noncanonical_bits)),
    Mutation("one byte short", "base64", 1, _b64(_raw(one_byte_short))),
    Mutation("one byte long", "base64", 1, _b64(_raw(one_byte_long))),
    Mutation("signature bit flipped", "base64", 3, _b64(_raw(flip_bit))),
    Mutation("hex instead of Base64", "base64", 1, _b64(hex_spelled)),
    Mutation("lower-cased", "base64", 1, _b64(lower_cased)),
    Mutation("Base64 of the Base64", "base64", 1, _b64(double_encoded)),
    Mutation("another key (2048)", "key", 3, by_stranger),
    Mutation("another key (3072)", "key", 1, by_big_stranger),
    Mutation("signature of another body", "key", 4, of_other_body),
    Mutation("signature of a prefix", "key", 3, of_prefix),
    Mutation("signature of an extension", "key", 1, of_extension),
    Mutation("signature of a re-serialization", "key", 1, of_reserialization),
    Mutation("other hash, platform key", "key", 2, other_hash),
    Mutation("PSS padding, platform key", "key", 1, pss),
)


def mutate(samples: Sequence[Sample], keys: Keys, rng: random.Random) -> list[Mutant]:
    """``PER_SAMPLE`` mutants of every sample, each checked to differ from its genuine request."""
    if sum(m.count for m in CATALOGUE) != PER_SAMPLE:
        raise ValueError("the catalogue does not add up to PER_SAMPLE")
    mutants = []
    for index, sample in enumerate(samples):
        ctx = Ctx(index, sample, samples, keys, rng)
        for mutation in CATALOGUE:
            for _ in range(mutation.count):
                body, signs = mutation.make(ctx)
                if body == sample.body and signs == (sample.sign,):
                    raise ValueError(f"{mutation.kind!r} left sample {index} unchanged")
                mutants.append(Mutant(mutation.kind, mutation.family, index, sample.path, body, signs,
                                      mutation.expect))
    return mutants
