"""INSERT ... ON CONFLICT DO NOTHING for both dialects, returning whether a row was written."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def insert_if_absent(conn: Connection, table: sa.Table, values: dict[str, Any], *, key: str) -> bool:
    """Insert unless a row with the same unique ``key`` exists; True when this call inserted it."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
                 .returning(table.c[key]))
    # RETURNING, not rowcount: with psycopg, rowcount of an INSERT ... ON CONFLICT is not reliable.
    return conn.execute(statement).first() is not None


def insert_ignoring(conn: Connection, table: sa.Table, *, key: str) -> Any:
    """An INSERT that skips rows whose unique ``key`` exists, for executemany (built once per shape).

    It returns the key of each row it wrote, though no caller reads it: with RETURNING, SQLAlchemy
    sends a batch as one multi-row INSERT per 1,000 rows ("insertmanyvalues"); without, an
    ``ON CONFLICT`` INSERT goes one statement per row, each planned and executed on its own."""
    return _insert_ignoring(conn.dialect.name, table, key)


@functools.cache
def _insert_ignoring(dialect_name: str, table: sa.Table, key: str) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
