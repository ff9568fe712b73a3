"""Rate windows: rate limits and failure throttles every replica counts in together.

One row per bucket (a digest of its name: a key, a user, an address) and fixed window, counted
on the database's clock (`appliance.auth.ratelimit.RateWindows`): `hits` by one upsert per
request, `refusals` of a throttled address, and `reported` once one replica has taken them for
the window's aggregate audit row. Finished windows are pruned by whichever replica gets there.

On PostgreSQL the table is UNLOGGED: a hit then commits without waiting for the write-ahead log
to reach the disk (about 0.5 ms instead of 4 on a durable server, tests/bench/RATELIMITS.md).
What that gives up: after a crash of the database the table starts empty, and a standby does not
have it, so the windows open at that moment start from zero, as a restarted single server's do.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    unlogged = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "rate_windows",
        sa.Column("bucket", sa.String(32), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("refusals", sa.Integer(), nullable=False),
        sa.Column("reported", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "window_start"),
        prefixes=unlogged,
    )
    op.create_index("ix_rate_windows_window_end", "rate_windows", ["window_end"])


def downgrade() -> None:
    op.drop_index("ix_rate_windows_window_end", table_name="rate_windows")
    op.drop_table("rate_windows")
