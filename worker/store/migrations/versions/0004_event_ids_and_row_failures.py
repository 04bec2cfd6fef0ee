"""outbox.event_id kept whole (255 characters); inbox.failures counts a row's failed applications

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 01:00:00

Why: event ids were cut to 96 characters, so two facts about a long outTradeNo could share an id
and the second event was skipped as a duplicate. ``failures`` is kept apart from ``attempts``
(which paces the re-matching of notifications for unknown records): a row that keeps failing is
parked after a few failures, whatever its other deferrals.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("event_id", existing_type=sa.String(96), type_=sa.String(255), existing_nullable=False)
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("failures")
    with op.batch_alter_table("outbox") as batch:  # ids longer than 96 characters must be gone first
        batch.alter_column("event_id", existing_type=sa.String(255), type_=sa.String(96), existing_nullable=False)
