"""orders and refunds: the send ledger (claims, sends known to have had no effect, the last answer)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.store.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("orders", "refunds")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("sends", sa.Integer(), nullable=False, server_default="0"))
            batch.add_column(sa.Column("clean_sends", sa.Integer(), nullable=False, server_default="0"))
            batch.add_column(sa.Column("last_answer", sa.String(16), nullable=True))
            batch.add_column(sa.Column("accepted_at", worker.store.schema.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for column in ("accepted_at", "last_answer", "clean_sends", "sends"):
                batch.drop_column(column)
