"""inbox.shard: notifications are applied in batches per shard

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("shard", sa.SmallInteger(), nullable=False, server_default="0"))
    # Only unprocessed rows are ever looked up by shard: a partial index stays as small as the backlog.
    op.create_index("ix_inbox_pending_shard", "inbox", ["shard", "id"],
                    postgresql_where=sa.text("processed_at IS NULL"), sqlite_where=sa.text("processed_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_inbox_pending_shard", table_name="inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("shard")
