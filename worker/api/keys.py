"""API keys: made and revoked from the CLI, checked on every request; only a digest is stored.

A secret is ``chk_`` + 32 random bytes (URL-safe Base64): with that much entropy a plain SHA-256
is enough (no slow hash needed: nothing to brute-force), and a lookup by digest is one indexed
read. The stored digest is still compared with ``hmac.compare_digest``, so the comparison takes
the same time whatever the input. Several keys can be active at once, so a shop rotates by making
the new key, deploying it, then revoking the old one; a revoked key is refused on its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from worker.store.db import read, write
from worker.store.schema import api_keys

SECRET_PREFIX = "chk_"
PREFIX_SHOWN = 12  # "chk_" and 8 characters: enough to tell keys apart, far too few to guess the rest


class ApiKeyError(ValueError):
    """A key cannot be made or revoked as asked (the message says why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    read_only: bool
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(id=m["id"], name=m["name"], prefix=m["prefix"], read_only=m["read_only"],
                  created_at=m["created_at"], revoked_at=m["revoked_at"])


def create_key(engine: Engine, name: str, *, read_only: bool, now: datetime) -> tuple[ApiKey, str]:
    """A new key and its secret: the secret is returned once and never stored."""
    if not name or len(name) > 64 or not name.isprintable():
        raise ApiKeyError("the name must be 1 to 64 printable characters")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    values = {"name": name, "prefix": secret[:PREFIX_SHOWN], "secret_sha256": digest(secret),
              "read_only": read_only, "created_at": now}
    try:
        with write(engine) as conn:
            conn.execute(api_keys.insert().values(**values))
            row = conn.execute(sa.select(api_keys).where(api_keys.c.name == name)).one()
    except IntegrityError:
        raise ApiKeyError(f"a key named {name!r} exists (revoked keys keep their name)") from None
    return _key(row), secret


def list_keys(engine: Engine) -> list[ApiKey]:
    with read(engine) as conn:
        return [_key(r) for r in conn.execute(sa.select(api_keys).order_by(api_keys.c.id))]


def revoke_key(engine: Engine, name: str, *, now: datetime) -> ApiKey:
    """Revoke the key named ``name`` (revoking a revoked key changes nothing)."""
    with write(engine) as conn:
        conn.execute(api_keys.update().where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                     .values(revoked_at=now))
        row = conn.execute(sa.select(api_keys).where(api_keys.c.name == name)).first()
    if row is None:
        raise ApiKeyError(f"no key named {name!r}")
    return _key(row)


def authenticate(engine: Engine, secret: str) -> ApiKey | None:
    """The active key whose secret this is, or None."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 128:
        return None
    presented = digest(secret)
    with read(engine) as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.secret_sha256 == presented)).first()
    if row is None or not hmac.compare_digest(row._mapping["secret_sha256"], presented):
        return None
    key = _key(row)
    return key if key.active else None
