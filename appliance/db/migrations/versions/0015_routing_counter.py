"""A change counter for routing overrides, so every replica sees an applied override at once.

Replicas cached the overrides table for a few seconds; now they read the `routing` counter
(one primary-key read) and reload only when it moved. Triggers bump it, as for `auth` and
`policies` (migration 0012, whose `bump_change_counter()` function PostgreSQL reuses here).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

VERBS = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    op.execute("INSERT INTO change_counters (name, value) VALUES ('routing', 0)")
    postgresql = op.get_bind().dialect.name == "postgresql"
    for verb in VERBS:
        trigger = f"routing_overrides_{verb.lower()}d"
        if postgresql:
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER {verb} ON routing_overrides "
                "FOR EACH STATEMENT EXECUTE FUNCTION bump_change_counter('routing')"
            )
        else:
            # Every name in these statements is a constant of this module.
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER {verb} ON routing_overrides BEGIN "  # noqa: S608
                "UPDATE change_counters SET value = value + 1 WHERE name = 'routing'; END"
            )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for verb in VERBS:
        trigger = f"routing_overrides_{verb.lower()}d"
        op.execute(f"DROP TRIGGER {trigger}" + (" ON routing_overrides" if postgresql else ""))
    op.execute("DELETE FROM change_counters WHERE name = 'routing'")
