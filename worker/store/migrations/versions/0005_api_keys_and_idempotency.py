"""api_keys (a digest of each secret, never the secret) and api_idempotency (Idempotency-Key claims)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 02:00:00

Why: the merchant HTTP API (``worker.api``) authenticates with keys an operator makes and revokes
from the CLI, and claims each Idempotency-Key in SQL (a unique constraint) before it acts, so two
concurrent requests with one key have one effect and a retry replays the first answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.store.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = worker.store.schema.UTCDateTime
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc(timezone=True), nullable=False),
        sa.Column("revoked_at", utc(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("secret_sha256", name="uq_api_keys_secret_sha256"),
    )
    op.create_table(
        "api_idempotency",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("claimed_at", utc(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("completed_at", utc(timezone=True), nullable=True),
        sa.Column("created_at", utc(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_idempotency"),
        sa.UniqueConstraint("idem_key", name="uq_api_idempotency_idem_key"),
    )
    op.create_index("ix_api_idempotency_created_at", "api_idempotency", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_api_idempotency_created_at", table_name="api_idempotency")
    op.drop_table("api_idempotency")
    op.drop_table("api_keys")
