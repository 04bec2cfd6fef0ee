"""Engines for SQLite (WAL, the embedded default) and PostgreSQL, and the transaction helpers.

SQLite: WAL so readers never block the writer, ``synchronous=FULL`` so a commit that was
acknowledged survives a power cut, a busy timeout so concurrent workers wait instead of
failing, and ``BEGIN IMMEDIATE`` for write transactions so two writers never deadlock on a
lock upgrade (the write lock itself is waited for by polling, see ``_begin_immediate``).
PostgreSQL: READ COMMITTED; the compare-and-set ``UPDATE ... WHERE version`` is what
serializes writers (a second writer blocks on the row, then matches nothing).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

SQLITE_BUSY_TIMEOUT_MS = 15000
LOCK_POLL_SECONDS = 0.001


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def create_engine(url: str, *, prepared_statements: bool = True, **kwargs: Any) -> Engine:
    """``prepared_statements=False``: psycopg never prepares server-side (PgBouncer in transaction
    pooling before 1.21 hands each transaction another server connection, where a statement
    prepared on the first does not exist). Nothing else holds session state across transactions:
    no ``SET``, no advisory locks, no temporary tables, no ``LISTEN``."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        _sqlite_hooks(engine)
        return engine
    if not prepared_statements:
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "prepare_threshold": None}
    engine = sa.create_engine(url, pool_pre_ping=True, **kwargs)
    # An executemany INSERT without RETURNING (the batch applier's audit rows) goes as one multi-row
    # INSERT per 1,000 rows instead of one INSERT per row: psycopg's pipeline saves the round trips
    # but not the server's planning and executing each row as a statement of its own. SQLAlchemy
    # never does this for ON CONFLICT inserts; the inbox and outbox batches get it through RETURNING
    # (``upsert.insert_ignoring``).
    engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def _sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is too late)
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                       "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("readonly", False):
            conn.exec_driver_sql("BEGIN")
        else:
            _begin_immediate(conn)


def _begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock by polling it every ``LOCK_POLL_SECONDS``.

    Why not SQLite's busy handler: it sleeps in growing steps (1, 2, 5 ... 25, 50, 100 ms), so
    under steady contention (the receiver's group commit and the workers' batches, each holding
    the lock a few ms) a waiter sleeping 50-100 ms misses the gaps between the others'
    transactions, and every request waiting on the receiver's commit waits with it. Attempts go
    straight to the driver (a refused one costs a few µs; through SQLAlchemy, which wraps each
    error, it cost a tenth of a core while waiting); the last one goes through SQLAlchemy so a
    timeout raises its ``OperationalError`` like any other. The total wait is bounded by the
    same busy timeout.
    """
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    break
            time.sleep(LOCK_POLL_SECONDS)
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # raises SQLAlchemy's error (or, just freed, succeeds)
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with engine.begin() as conn:
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (a consistent snapshot; never takes SQLite's write lock)."""
    with engine.connect() as conn, conn.execution_options(readonly=True).begin():
        yield conn
