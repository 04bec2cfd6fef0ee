"""A private PostgreSQL database on the server at CHECUS_TEST_POSTGRES_URL (CI makes sure one runs)."""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("CHECUS_TEST_POSTGRES_URL", ADMIN_URL)


def create_database() -> tuple[str, str]:
    """Create a fresh database; returns (its URL, its name). Fails loudly when no server answers."""
    name = f"checus_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise RuntimeError(
            f"no PostgreSQL at {admin_url()} (start one, or run .ci/services): {exc.orig}") from None
    finally:
        admin.dispose()
    url = sa.engine.make_url(admin_url()).set(database=name)
    return url.render_as_string(hide_password=False), name


def drop_database(name: str) -> None:
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
