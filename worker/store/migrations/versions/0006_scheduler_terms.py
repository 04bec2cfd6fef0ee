"""scheduler_leader (the fence: the current term) and scheduler_terms (one row per term)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 04:30:00

Why: a scheduler that was partitioned or paused past its Redis lease still believes it leads until
it next asks Redis. Its actions are fenced in SQL instead: each runs in a transaction holding the one
``scheduler_leader`` row with the term it started, and a new leader's term begins by updating that row,
so the two never act at once, whatever Redis said.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.store.schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = worker.store.schema.UTCDateTime
    leader = op.create_table(
        "scheduler_leader",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_leader"),
    )
    op.bulk_insert(leader, [{"id": 1, "term": 0, "holder": None}])
    op.create_table(
        "scheduler_terms",
        sa.Column("term", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("started_at", utc(timezone=True), nullable=False),
        sa.Column("last_tick_at", utc(timezone=True), nullable=True),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("term", name="pk_scheduler_terms"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_terms")
    op.drop_table("scheduler_leader")
