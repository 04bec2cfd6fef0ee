"""Bulk PENDING orders, written straight to SQL before anything is timed.

Why straight to SQL: a notification only applies to an order the store already holds (else it is
deferred as ``unknown_order``), and creating orders through the API would call the simulator once
each. Why one ``INSERT … SELECT`` over a generated series: the database builds every row itself,
so 1,000,000 orders take seconds on PostgreSQL (no per-row round trips, no Python per row), and
the same statement seeds SQLite through a recursive CTE. Times go through the schema's own column
type, so SQLite gets the exact text format the product reads back.

Orders are numbered ``<prefix><index>`` and match what ``payloads`` signs: amount 10.00 USD, the
stack's app id and merchant number, so a SUCCESS notification for each moves it PENDING → SUCCESS.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.devtools.bench.stack import APP_ID, MERCHANT_NO
from worker.store.schema import UTCDateTime

AMOUNT_MINOR = 1000
CURRENCY = "USD"

_COLUMNS = ("out_trade_no, out_trade_no_key, kind, state, version, amount_minor, currency, country, user_id, "
            "subject, tokenize, app_id, merchant_no, trade_token, submit_hint, request_json, refund_seq, "
            "created_at, updated_at, last_submit_at, expire_at, next_poll_at, poll_count")


def order_number(prefix: str, index: int) -> str:
    return f"{prefix}{index}"


def _series(dialect: str) -> str:
    if dialect == "postgresql":
        return "SELECT i FROM generate_series(CAST(:first AS BIGINT), CAST(:last AS BIGINT)) AS g(i)"
    return "WITH RECURSIVE g(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM g WHERE i < :last) SELECT i FROM g"


def _next_poll(dialect: str, spread_seconds: int) -> str:
    """``:poll_at``, or on PostgreSQL spread over ``spread_seconds`` (a realistic, non-uniform index)."""
    if dialect == "postgresql" and spread_seconds > 0:
        return f":poll_at + make_interval(secs => (s.i % {int(spread_seconds)}))"
    return ":poll_at"


def seed_orders(engine: Engine, *, prefix: str, first: int, count: int, now: datetime, poll_at: datetime,
                spread_seconds: int = 0) -> None:
    """Insert PENDING orders ``prefix+first`` … ``prefix+(first+count-1)`` in one statement."""
    if count <= 0:
        return
    dialect = engine.dialect.name
    statement = sa.text(
        f"INSERT INTO orders ({_COLUMNS}) "  # noqa: S608 - fixed column list and dialect fragments, values bound
        f"SELECT CAST(:prefix AS VARCHAR(64)) || CAST(s.i AS VARCHAR(20)), "
        f"UPPER(CAST(:prefix AS VARCHAR(64)) || CAST(s.i AS VARCHAR(20))), 'hosted', 'PENDING', 1, :amount, "
        f":currency, 'US', 'bench', 'bench', :tokenize, :app_id, :merchant_no, "
        f"'TT' || CAST(s.i AS VARCHAR(20)), 'PENDING', '{{}}', 0, :now, :now, :now, :expire, "
        f"{_next_poll(dialect, spread_seconds)}, 0 "
        f"FROM ({_series(dialect)}) AS s"
    ).bindparams(sa.bindparam("now", type_=UTCDateTime()), sa.bindparam("expire", type_=UTCDateTime()),
                 sa.bindparam("poll_at", type_=UTCDateTime()), sa.bindparam("tokenize", type_=sa.Boolean()))
    with engine.begin() as conn:
        conn.execute(statement, {
            "prefix": prefix, "first": first, "last": first + count - 1, "amount": AMOUNT_MINOR,
            "currency": CURRENCY, "app_id": APP_ID, "merchant_no": MERCHANT_NO, "tokenize": False, "now": now,
            "expire": now + timedelta(days=1), "poll_at": poll_at,
        })
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE orders"))  # what autovacuum does in production after a bulk load


def make_due(engine: Engine, *, prefix: str, indices: list[int], now: datetime) -> None:
    """Move some seeded orders' next poll into the past (the scheduler's ``due`` set)."""
    keys = [order_number(prefix, i).upper() for i in indices]
    statement = sa.text("UPDATE orders SET next_poll_at = :due WHERE out_trade_no_key IN :keys").bindparams(
        sa.bindparam("due", type_=UTCDateTime()), sa.bindparam("keys", expanding=True))
    with engine.begin() as conn:
        conn.execute(statement, {"due": now - timedelta(seconds=1), "keys": keys})
