"""Signing and verification of exact body bytes, key formats, rotation, openssl interop."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from worker.gateway.signing import (
    KeyLoadError,
    PortalKeyPair,
    Signer,
    Verifier,
    decode_signature,
    generate_private_key,
    load_private_key,
    load_public_key,
    load_public_keys,
    read_key_file,
)

BODY = b'{"version":"1.4","keyVersion":"1","data":{"outTradeNo":"P1","notifyUrl":"https://m.example/n"}}'


def _signer(keys: PortalKeyPair) -> Signer:
    return Signer.from_value(keys.private_key, setting="TEST_PRIVATE")


def _verifier(*pairs: PortalKeyPair) -> Verifier:
    return Verifier.from_values([p.public_key for p in pairs], setting="TEST_PUBLIC")


def test_round_trip_on_exact_bytes(merchant_keys: PortalKeyPair) -> None:
    """A signature over the body verifies, and any changed byte breaks it."""
    sign = _signer(merchant_keys).sign(BODY)
    verifier = _verifier(merchant_keys)
    assert verifier.verify(BODY, sign)
    assert not verifier.verify(BODY + b" ", sign)
    assert not verifier.verify(BODY.replace(b"P1", b"P2"), sign)


def test_php_escaped_slashes_verify_but_reserialized_does_not(platform_keys: PortalKeyPair) -> None:
    """A peer that writes \\/ (PHP json_encode) is verified on its own bytes, not on a re-encoding."""
    php_body = b'{"code":"APPLY_SUCCESS","data":{"notifyUrl":"https:\\/\\/m.example\\/n"}}'
    sign = _signer(platform_keys).sign(php_body)
    verifier = _verifier(platform_keys)
    assert verifier.verify(php_body, sign)
    reserialized = json.dumps(json.loads(php_body), separators=(",", ":")).encode()
    assert reserialized != php_body
    assert not verifier.verify(reserialized, sign)


def test_any_trusted_key_verifies_during_rotation(platform_keys: PortalKeyPair, other_keys: PortalKeyPair) -> None:
    """With old and new platform keys configured, both signatures pass; after removal the old fails."""
    both = _verifier(platform_keys, other_keys)
    new_only = _verifier(other_keys)
    old_sign = _signer(platform_keys).sign(BODY)
    assert both.verify(BODY, old_sign)
    assert both.verify(BODY, _signer(other_keys).sign(BODY))
    assert not new_only.verify(BODY, old_sign)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.rstrip("="),  # padding dropped
        lambda s: s.replace("+", "-").replace("/", "_"),  # URL-safe alphabet
        lambda s: s[:100] + "\n" + s[100:],  # embedded newline
        lambda s: " " + s,
        lambda s: s[:-4],  # truncated
        lambda s: s + s,  # two signatures
        lambda s: "",
    ],
)
def test_signature_variants_are_refused(merchant_keys: PortalKeyPair, mangle: object) -> None:
    """A signature has one spelling: standard Base64 of exactly one RSA block."""
    sign = _signer(merchant_keys).sign(BODY)
    variant = mangle(sign)  # type: ignore[operator]
    if variant == sign:
        pytest.fail("mangler produced the original signature")
    assert not _verifier(merchant_keys).verify(BODY, variant)


def test_decode_signature_rejects_noncanonical_trailing_bits() -> None:
    raw = bytes(256)
    good = base64.b64encode(raw).decode()
    assert decode_signature(good, key_bytes=256) == raw
    tweaked = good[:-3] + "B=="  # same bytes under a lax decoder, different text
    assert decode_signature(tweaked, key_bytes=256) is None
    assert decode_signature(None, key_bytes=256) is None


def test_pem_and_portal_formats_load_to_the_same_key(merchant_keys: PortalKeyPair) -> None:
    portal = load_private_key(merchant_keys.private_key, setting="X")
    pem = portal.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    from_pem = load_private_key(pem, setting="X")
    assert from_pem.private_numbers() == portal.private_numbers()
    pub_pem = portal.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(pub_pem, setting="Y").public_numbers() == portal.public_key().public_numbers()


def test_public_key_lists_split_on_commas_whitespace_and_pem(
    merchant_keys: PortalKeyPair, other_keys: PortalKeyPair
) -> None:
    assert len(load_public_keys(f"{merchant_keys.public_key}, {other_keys.public_key}", setting="K")) == 2
    pems = "".join(
        load_public_key(k.public_key, setting="K")
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        for k in (merchant_keys, other_keys)
    )
    assert len(load_public_keys(pems, setting="K")) == 2


@pytest.mark.parametrize("value", ["", "not base64 !!", base64.b64encode(b"garbage").decode()])
def test_bad_keys_name_the_setting_and_never_the_value(value: str) -> None:
    with pytest.raises(KeyLoadError) as info:
        load_private_key(value, setting="CHECUS_MERCHANT_PRIVATE_KEY")
    assert str(info.value).startswith("CHECUS_MERCHANT_PRIVATE_KEY:")
    if value:
        assert value not in str(info.value)


def test_short_keys_are_refused() -> None:
    small = generate_private_key(1024)
    der = small.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyLoadError, match="2048"):
        load_private_key(base64.b64encode(der).decode(), setting="K")


def test_private_key_file_must_not_be_group_readable(tmp_path: Path, merchant_keys: PortalKeyPair) -> None:
    path = tmp_path / "merchant.key"
    path.write_text(merchant_keys.private_key)
    path.chmod(0o644)
    with pytest.raises(KeyLoadError, match="chmod 600"):
        read_key_file(path, setting="CHECUS_MERCHANT_PRIVATE_KEY_FILE", private=True)
    path.chmod(0o600)
    assert read_key_file(path, setting="K", private=True) == merchant_keys.private_key


def test_reprs_hide_key_material(merchant_keys: PortalKeyPair) -> None:
    signer = _signer(merchant_keys)
    assert merchant_keys.private_key[:40] not in repr(signer)
    assert merchant_keys.private_key[:40] not in repr(merchant_keys)


def _pem_files(tmp_path: Path, keys: PortalKeyPair) -> tuple[Path, Path]:
    key = load_private_key(keys.private_key, setting="K")
    priv = tmp_path / "priv.pem"
    pub = tmp_path / "pub.pem"
    priv.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(priv, 0o600)
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


def test_openssl_verifies_our_signature(tmp_path: Path, merchant_keys: PortalKeyPair) -> None:
    """Interop: `openssl dgst -sha256 -verify` accepts what Signer produced."""
    _, pub = _pem_files(tmp_path, merchant_keys)
    (tmp_path / "body").write_bytes(BODY)
    (tmp_path / "sig").write_bytes(base64.b64decode(_signer(merchant_keys).sign(BODY)))
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig"),
         str(tmp_path / "body")],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"Verified OK" in result.stdout


def test_we_verify_an_openssl_signature(tmp_path: Path, merchant_keys: PortalKeyPair) -> None:
    """Interop: a signature made by `openssl dgst -sha256 -sign` passes Verifier, and fails on other bytes."""
    priv, _ = _pem_files(tmp_path, merchant_keys)
    (tmp_path / "body").write_bytes(BODY)
    raw = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(priv), str(tmp_path / "body")], capture_output=True, check=True
    ).stdout
    sign = base64.b64encode(raw).decode()
    assert _verifier(merchant_keys).verify(BODY, sign)
    assert not _verifier(merchant_keys).verify(BODY[:-1], sign)
