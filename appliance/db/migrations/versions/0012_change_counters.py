"""Change counters: one number per kind of cached state, bumped by the database itself.

Every replica caches what it checks on each request (a verified API key, a resolved policy) and
reads the counter of that state once per request: a different number means something changed,
in this process, another replica, or by hand in the database, and the cache is dropped. The
counters are bumped by triggers, so no writer can forget them:

- `auth`: an API key's rights changing (revoked, expired, scopes, policy, team, owner, secret)
  or its row deleted; an account disabled, moved to another team, or deleted.
- `policies`: any version, activation or assignment written or deleted.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

KEY_COLUMNS = "revoked_at, expires_at, scopes, policy, team, owner_id, digest, prefix, name"
USER_COLUMNS = "disabled, team"
# (trigger, table, events, counter); `events` in the form both dialects share.
WATCHES = [
    ("api_keys_changed", "api_keys", f"UPDATE OF {KEY_COLUMNS}", "auth"),
    ("api_keys_deleted", "api_keys", "DELETE", "auth"),
    ("users_changed", "users", f"UPDATE OF {USER_COLUMNS}", "auth"),
    ("users_deleted", "users", "DELETE", "auth"),
    *(
        (f"{table}_{verb.lower()}d", table, verb, "policies")
        for table in ("policy_versions", "policy_activations", "policy_assignments")
        for verb in ("INSERT", "UPDATE", "DELETE")
    ),
]


def upgrade() -> None:
    op.create_table(
        "change_counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO change_counters (name, value) VALUES ('auth', 0), ('policies', 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """CREATE FUNCTION bump_change_counter() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE change_counters SET value = value + 1 WHERE name = TG_ARGV[0];
                RETURN NULL;
            END
            $$"""
        )
        for trigger, table, events, counter in WATCHES:
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER {events} ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION bump_change_counter('{counter}')"
            )
        return
    for trigger, table, events, counter in WATCHES:
        # Every name in these statements is a constant of this module.
        op.execute(
            f"CREATE TRIGGER {trigger} AFTER {events} ON {table} BEGIN "  # noqa: S608
            f"UPDATE change_counters SET value = value + 1 WHERE name = '{counter}'; END"
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for trigger, table, _, _ in WATCHES:
        op.execute(f"DROP TRIGGER {trigger}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION bump_change_counter()")
    op.drop_table("change_counters")
