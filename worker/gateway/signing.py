"""SHA256withRSA signing and verification of exact HTTP body bytes.

Checus (like PayerMax) signs the *raw* body: no canonicalisation, no sorted keys, no
timestamp concatenation. So the only safe order of operations is: serialize once, sign
those bytes, send those bytes; and on receipt, verify the bytes as they came off the wire
*before* parsing them. A peer that escapes ``/`` as ``\\/`` (PHP's ``json_encode``) is
therefore fine, and a body that was re-serialized is not.

Keys arrive the way the Checus portal hands them out: one line of Base64 DER (PKCS#8 for
the merchant private key, X.509 SubjectPublicKeyInfo for public keys). PEM is accepted too.
Several platform public keys may be trusted at once so that a key rotation rejects
nothing; a signature passes if any trusted key verifies it.

Key objects never print their material: ``Signer`` and ``Verifier`` have opaque reprs,
and every error names the *setting* that held the key, never the value.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MIN_KEY_BITS = 2048
_PEM_MARK = "-----BEGIN "


class KeyLoadError(ValueError):
    """A key could not be loaded. The message names the setting, never the key."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def _der_or_pem(value: str | bytes, setting: str) -> tuple[bytes, bool]:
    """Return (bytes, is_pem) for a portal-format or PEM key value."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        raise KeyLoadError(setting, "is empty")
    if _PEM_MARK in text:
        return text.encode("ascii", "replace"), True
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True), False
    except (binascii.Error, ValueError):
        raise KeyLoadError(setting, "is neither PEM nor single-line Base64 DER") from None


def load_private_key(value: str | bytes, *, setting: str) -> rsa.RSAPrivateKey:
    """Load an unencrypted RSA private key (portal Base64 PKCS#8 DER, or PEM)."""
    data, is_pem = _der_or_pem(value, setting)
    try:
        if is_pem:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyLoadError(setting, "is not a readable unencrypted private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyLoadError(setting, "is not an RSA key")
    if key.key_size < MIN_KEY_BITS:
        raise KeyLoadError(setting, f"is {key.key_size} bits; at least {MIN_KEY_BITS} are required")
    return key


def load_public_key(value: str | bytes, *, setting: str) -> rsa.RSAPublicKey:
    """Load an RSA public key (portal Base64 X.509 SPKI DER, or PEM)."""
    data, is_pem = _der_or_pem(value, setting)
    try:
        key = serialization.load_pem_public_key(data) if is_pem else serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyLoadError(setting, "is not a readable public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyLoadError(setting, "is not an RSA key")
    if key.key_size < MIN_KEY_BITS:
        raise KeyLoadError(setting, f"is {key.key_size} bits; at least {MIN_KEY_BITS} are required")
    return key


def split_public_keys(value: str) -> list[str]:
    """Split a list of public keys: PEM blocks, or portal keys separated by commas or whitespace."""
    if _PEM_MARK in value:
        blocks, current = [], []
        for line in value.splitlines():
            current.append(line)
            if line.startswith("-----END "):
                blocks.append("\n".join(current))
                current = []
        return [b for b in blocks if b.strip()]
    return [part for part in value.replace(",", " ").split() if part]


def load_public_keys(value: str, *, setting: str) -> list[rsa.RSAPublicKey]:
    """Load one or more trusted public keys (key rotation keeps the old and new one)."""
    parts = split_public_keys(value)
    if not parts:
        raise KeyLoadError(setting, "holds no key")
    return [load_public_key(p, setting=f"{setting}[{i}]") for i, p in enumerate(parts)]


def read_key_file(path: str | os.PathLike[str], *, setting: str, private: bool) -> str:
    """Read a key file; a private key file readable by group or others is refused."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyLoadError(setting, f"cannot read {p}: {type(exc).__name__}") from None
    if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyLoadError(setting, f"{p} is readable by group or others (chmod 600 it)")
    return text


def private_key_to_portal(key: rsa.RSAPrivateKey) -> str:
    """The portal's format: one line of Base64 PKCS#8 DER."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return base64.b64encode(der).decode("ascii")


def public_key_to_portal(key: rsa.RSAPublicKey) -> str:
    """The portal's format: one line of Base64 X.509 SubjectPublicKeyInfo DER."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def generate_private_key(bits: int = MIN_KEY_BITS) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortalKeyPair:
    """A key pair in portal format. ``repr`` never shows the private half."""

    private_key: str
    public_key: str

    def __repr__(self) -> str:
        return f"PortalKeyPair(public_key={self.public_key[-12:]!r}…, private_key=<redacted>)"


def generate_portal_key_pair(bits: int = MIN_KEY_BITS) -> PortalKeyPair:
    key = generate_private_key(bits)
    public = public_key_to_portal(key.public_key())
    return PortalKeyPair(private_key=private_key_to_portal(key), public_key=public)


class Signer:
    """Signs body bytes with one private key; the value for the ``sign`` header."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    @classmethod
    def from_value(cls, value: str | bytes, *, setting: str) -> Signer:
        return cls(load_private_key(value, setting=setting))

    def sign(self, body: bytes) -> str:
        raw = self._key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return "Signer(<private key redacted>)"


def decode_signature(value: str | None, *, key_bytes: int) -> bytes | None:
    """Strict standard Base64 of exactly one RSA block, or None.

    Variants (URL-safe alphabet, missing padding, embedded whitespace, non-canonical
    trailing bits) are refused: a signature has one spelling.
    """
    if not value or len(value) > 4 * ((key_bytes + 2) // 3):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != key_bytes or base64.b64encode(raw).decode("ascii") != value:
        return None
    return raw


class Verifier:
    """Verifies ``sign`` values against any of several trusted public keys."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Sequence[rsa.RSAPublicKey]) -> None:
        if not keys:
            raise ValueError("a Verifier needs at least one public key")
        self._keys = tuple(keys)

    @classmethod
    def from_values(cls, values: Iterable[str], *, setting: str) -> Verifier:
        return cls([load_public_key(v, setting=f"{setting}[{i}]") for i, v in enumerate(values)])

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when some trusted key signed exactly these bytes."""
        for key in self._keys:
            raw = decode_signature(signature, key_bytes=(key.key_size + 7) // 8)
            if raw is None:
                continue
            try:
                key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                continue
            return True
        return False

    def __repr__(self) -> str:
        return f"Verifier(keys={len(self._keys)})"
