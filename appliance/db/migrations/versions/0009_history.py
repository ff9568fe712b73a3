"""Workspace history content kept under the policy's retention.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_entries",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("task", sa.String(50), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_sealed", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_history_entries_owner", "history_entries", ["owner"])
    op.create_index("ix_history_entries_expires_at", "history_entries", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_history_entries_expires_at", table_name="history_entries")
    op.drop_index("ix_history_entries_owner", table_name="history_entries")
    op.drop_table("history_entries")
