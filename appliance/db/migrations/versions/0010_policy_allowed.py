"""Policies an assignment allows a request to name besides the assigned one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy_assignments") as batch:
        batch.add_column(sa.Column("allowed", sa.String(1000), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("policy_assignments") as batch:
        batch.drop_column("allowed")
