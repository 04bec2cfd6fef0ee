"""Tables. Money is integer minor units (exact on SQLite and PostgreSQL alike, and summable in SQL).

Every order and refund row carries ``version``: a transition is one transaction that
compare-and-sets it (see ``store.apply``), so a stale writer changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

Time = UTCDateTime

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # Checus treats outTradeNo case-insensitively; the key column is the upper-cased form.
    sa.Column("out_trade_no", sa.String(64), nullable=False),
    sa.Column("out_trade_no_key", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # hosted | token
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("country", sa.String(2)),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("tokenize", sa.Boolean, nullable=False, default=False),
    sa.Column("token_ref", sa.Integer),  # payment_tokens.id used by a token payment
    sa.Column("app_id", sa.String(64), nullable=False),
    sa.Column("merchant_no", sa.String(32), nullable=False),
    sa.Column("trade_token", sa.String(64)),
    sa.Column("redirect_url", sa.String(1024)),
    sa.Column("submit_hint", sa.String(16)),  # status /orderAndPay returned: a hint only
    # The exact request data sent (without the token id), so a lost create can be resubmitted.
    sa.Column("request_json", sa.Text, nullable=False),
    sa.Column("refund_seq", sa.Integer, nullable=False, default=0),  # CAS guard for refund creation
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("last_submit_at", Time),
    sa.Column("expire_at", Time),
    sa.Column("next_poll_at", Time, index=True),
    sa.Column("poll_count", sa.Integer, nullable=False, default=0),
    # The send ledger (statemachine.sending): sends claimed, sends known to have had no effect,
    # the answer to the latest send, and when Checus last accepted one.
    sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
    sa.Column("clean_sends", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_answer", sa.String(16)),
    sa.Column("accepted_at", Time),
)

refunds = sa.Table(
    "refunds", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("out_refund_no", sa.String(64), nullable=False, unique=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("comments", sa.String(512)),
    sa.Column("refund_trade_no", sa.String(64)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("last_submit_at", Time),
    sa.Column("next_poll_at", Time, index=True),
    sa.Column("poll_count", sa.Integer, nullable=False, default=0),
    # The send ledger (statemachine.sending): sends claimed, sends known to have had no effect,
    # the answer to the latest send, and when Checus last accepted one.
    sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
    sa.Column("clean_sends", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_answer", sa.String(16)),
    sa.Column("accepted_at", Time),
)

payment_tokens = sa.Table(
    "payment_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    # The token is a charge credential: it lives here and nowhere else (not Redis, not logs).
    sa.Column("token_id", sa.String(64), nullable=False, unique=True),
    sa.Column("token_hint", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("card_org", sa.String(32)),
    sa.Column("masked_card", sa.String(32)),
    sa.Column("expiry", Time),
    sa.Column("source_order_id", sa.Integer, sa.ForeignKey("orders.id")),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

transitions = sa.Table(
    "transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("entity", sa.String(8), nullable=False),  # order | refund | token
    sa.Column("entity_id", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # the version this transition produced
    sa.Column("from_state", sa.String(16)),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(48), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # api | notification | poll | operator
    sa.Column("evidence", sa.Text, nullable=False),  # JSON, redacted: what caused it
    sa.Column("at", Time, nullable=False),
    sa.UniqueConstraint("entity", "entity_id", "version", name="uq_transitions_entity_version"),
)

inbox = sa.Table(
    "inbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dedupe_key", sa.String(160), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),  # payment | refund
    sa.Column("ref", sa.String(64), nullable=False, index=True),  # outTradeNo or outRefundNo
    sa.Column("body", sa.LargeBinary, nullable=False),  # raw bytes, re-verified by the worker
    sa.Column("sign", sa.String(1024), nullable=False),
    sa.Column("received_at", Time, nullable=False),
    sa.Column("processed_at", Time, index=True),
    sa.Column("outcome", sa.String(32)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", Time),
    # Failed applications (an exception, not a deferral): parked with an anomaly past a few (applier).
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("shard", sa.SmallInteger, nullable=False, server_default="0"),  # see store.inbox.shard_of
    sa.Index("ix_inbox_pending_shard", "shard", "id", postgresql_where=sa.text("processed_at IS NULL"),
             sqlite_where=sa.text("processed_at IS NULL")),
)

outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(255), nullable=False, unique=True),  # kept whole: see outbox.stable_id
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("delivered_at", Time, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", Time),
    sa.Column("last_error", sa.String(200)),
)

anomalies = sa.Table(
    "anomalies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("entity", sa.String(8), nullable=False),
    sa.Column("entity_id", sa.Integer),
    sa.Column("ref", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(500), nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("resolved_at", Time),
    sa.Column("resolved_by", sa.String(64)),
    sa.Column("resolution", sa.String(500)),
)

# The merchant HTTP API (worker.api): its keys (only a digest of each secret) and its idempotency claims.
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # the secret's first characters, to tell keys apart
    sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("read_only", sa.Boolean, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time),
)

api_idempotency = sa.Table(
    "api_idempotency", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("idem_key", sa.String(255), nullable=False, unique=True),  # claimed before acting
    sa.Column("fingerprint", sa.String(64), nullable=False),  # sha256 of method, path and canonical body
    sa.Column("claimed_at", Time, nullable=False),
    sa.Column("status", sa.Integer),  # NULL while the first request is in progress
    sa.Column("response", sa.Text),
    sa.Column("completed_at", Time),
    sa.Column("created_at", Time, nullable=False, index=True),  # purged past the retention
)

# The scheduler's fence (worker.store.leadership). The Redis lease only says who should lead; the one
# row of scheduler_leader says whose term is current, and every scheduler action is taken inside a
# transaction that holds that row with its own term, so an old leader's action cannot commit after a
# new term began. scheduler_terms keeps one row per term: who led, when, how many ticks.
scheduler_leader = sa.Table(
    "scheduler_leader", metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("holder", sa.String(200)),
)

scheduler_terms = sa.Table(
    "scheduler_terms", metadata,
    sa.Column("term", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(200), nullable=False),  # host:pid
    sa.Column("started_at", Time, nullable=False),
    sa.Column("last_tick_at", Time),
    sa.Column("ticks", sa.Integer, nullable=False),
)
