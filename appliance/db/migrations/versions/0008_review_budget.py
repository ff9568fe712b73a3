"""Review queue and the escalation budget.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task", sa.String(50), nullable=False),
        sa.Column("reason", sa.String(30), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("tier", sa.String(20), nullable=True),
        sa.Column("policy", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("audit_id", sa.String(32), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.Column("input_digest", sa.String(64), nullable=False),
        sa.Column("output_digest", sa.String(64), nullable=True),
        sa.Column("input_chars", sa.Integer(), nullable=False),
        sa.Column("content_kept", sa.Boolean(), nullable=False),
        sa.Column("content_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("golden_set", sa.String(200), nullable=True),
        sa.Column("golden_version", sa.Integer(), nullable=True),
    )
    op.create_index("ix_review_items_created_at", "review_items", ["created_at"])
    op.create_index("ix_review_items_expires_at", "review_items", ["expires_at"])
    op.create_index("ix_review_items_status", "review_items", ["status"])
    op.create_table(
        "escalation_budget_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("cap_usd", sa.Float(), nullable=True),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Spend per month sums usage rows by tier and time.
    op.create_index("ix_usage_records_tier_time", "usage_records", ["tier", "time"])
    op.add_column(
        "users", sa.Column("reviewer", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("reviewer")
    op.drop_index("ix_usage_records_tier_time", table_name="usage_records")
    op.drop_table("escalation_budget_changes")
    op.drop_index("ix_review_items_status", table_name="review_items")
    op.drop_index("ix_review_items_expires_at", table_name="review_items")
    op.drop_index("ix_review_items_created_at", table_name="review_items")
    op.drop_table("review_items")
