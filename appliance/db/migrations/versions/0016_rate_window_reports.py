"""Rate windows: the refusals already reported, as a count instead of a flag.

A replica that stops before a window ends reports the window's refusals so far (the aggregate
audit row of a throttled address). With a `reported` flag, the refusals other replicas counted
later in that window were never reported. Now `reported_refusals` holds how many have been, and
a claim (`appliance.auth.ratelimit.RateWindows.claim`) raises it to `refusals` and takes the
difference, which the same statement leaves in `claimed_refusals` (an `UPDATE` sets every
column from the row as it was, on both databases): a later claim reports the rest, in a second
row, and two claimers never take the same refusal.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in ("reported_refusals", "claimed_refusals"):
        op.add_column(
            "rate_windows", sa.Column(column, sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE rate_windows SET reported_refusals = refusals WHERE reported")
    # SQLite rebuilds the table for this (a batch); PostgreSQL drops the column in place.
    with op.batch_alter_table("rate_windows") as batch:
        batch.drop_column("reported")


def downgrade() -> None:
    op.add_column(
        "rate_windows",
        sa.Column("reported", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # A window reported in part counts as reported: the older code would report it whole
    # again, so it under-reports rather than counts a refusal twice.
    op.execute("UPDATE rate_windows SET reported = (reported_refusals > 0)")
    with op.batch_alter_table("rate_windows") as batch:
        batch.drop_column("claimed_refusals")
        batch.drop_column("reported_refusals")
