"""Leases on background work, so replicas on one database share it and each piece runs once.

- `leases(name, holder, expires_at)`: singleton duties (expiry sweeps, timed checkpoints, the
  retention purge), one row each, taken with a conditional upsert.
- `batch_items` and `eval_runs` gain `lease_holder` and `lease_expires_at`; batch items also
  count their `attempts` (claims), and get an index that finds a job's next pending item without
  walking its finished ones.
- `model_pulls`: pull jobs as rows (they lived in one process's memory), with their progress and
  a lease; a partial unique index allows one running pull per (backend, model).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

LEASE_COLUMNS = ("lease_holder", "lease_expires_at")


def _lease_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("lease_holder", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("batch_items") as batch:
        for column in _lease_columns():
            batch.add_column(column)
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_batch_items_claim", "batch_items", ["job_id", "status", "seq"])
    with op.batch_alter_table("eval_runs") as batch:
        for column in _lease_columns():
            batch.add_column(column)
    op.create_table(
        "model_pulls",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("backend", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("requester", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("phase", sa.String(200), nullable=False),
        sa.Column("node_index", sa.Integer(), nullable=False),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *_lease_columns(),
    )
    op.create_index("ix_model_pulls_status", "model_pulls", ["status"])
    op.create_index(
        "uq_model_pulls_running",
        "model_pulls",
        ["backend", "model"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("uq_model_pulls_running", table_name="model_pulls")
    op.drop_index("ix_model_pulls_status", table_name="model_pulls")
    op.drop_table("model_pulls")
    with op.batch_alter_table("eval_runs") as batch:
        for name in LEASE_COLUMNS:
            batch.drop_column(name)
    op.drop_index("ix_batch_items_claim", table_name="batch_items")
    with op.batch_alter_table("batch_items") as batch:
        batch.drop_column("attempts")
        for name in LEASE_COLUMNS:
            batch.drop_column(name)
    op.drop_table("leases")
