"""Audit trail: hash chain, signed checkpoints, append-only triggers.

Replaces the foundation's `audit_events` table with the chained one: existing rows are copied in
order and chained (so a trail started before this revision stays verifiable from its first row).
Triggers reject UPDATE and DELETE on the audit tables on SQLite and PostgreSQL; the only delete
allowed is the retention purge, which opens `audit_purge_gate` inside its own transaction.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from appliance.audit.chain import GENESIS, row_hash
from appliance.audit.events import typed_action

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM audit_purge_gate WHERE OLD.seq <= upto_seq)
    BEGIN SELECT RAISE(ABORT,
        'audit_events is append-only: DELETE only through the retention purge'); END""",
    """CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: DELETE is not allowed'); END""",
]

_POSTGRES_TRIGGERS = [
    """CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events' THEN
            IF EXISTS (SELECT 1 FROM audit_purge_gate WHERE OLD.seq <= upto_seq) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'audit_events is append-only: DELETE only through the retention purge';
        END IF;
        RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP;
    END
    $$""",
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()""",
    """CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
    """CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()""",
]


def _chained_table() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(50), nullable=True),
        sa.Column("source", sa.String(100), nullable=True),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(50), nullable=False),
        sa.Column("policy", sa.String(200), nullable=True),
        sa.Column("entity_counts", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("tier", sa.String(50), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_id", "audit_events", ["id"], unique=True)
    op.create_index("ix_audit_events_time", "audit_events", ["time"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_request_id", "audit_events", ["request_id"])


def _copy_foundation_rows(old: sa.TableClause, new: sa.TableClause) -> None:
    """Chain the foundation's rows in their order, mapping generic actions onto typed events."""
    bind = op.get_bind()
    prev = GENESIS
    rows = bind.execute(sa.select(old).order_by(old.c.seq)).mappings()
    for seq, row in enumerate(rows, start=1):
        values: dict[str, Any] = {
            "seq": seq,
            "id": row["id"],
            "time": row["time"],
            "actor": row["actor"],
            "role": None,
            "source": row["source"],
            "action": typed_action(row["action"], row["outcome"], row["status_code"]),
            "target": None,
            "outcome": row["outcome"],
            "policy": row["policy"],
            "entity_counts": dict(row["entity_counts"] or {}),
            "model": row["model"],
            "tier": None,
            "request_id": row["request_id"],
            "status_code": row["status_code"],
            "details": {},
            "prev_hash": prev,
        }
        values["hash"] = prev = row_hash(values)
        bind.execute(new.insert().values(**values))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_audit_events_id", table_name="audit_events")
    op.rename_table("audit_events", "audit_events_0001")
    _chained_table()
    common: list[sa.ColumnClause[Any]] = [
        sa.column("seq", sa.BigInteger()),
        sa.column("id", sa.String()),
        sa.column("time", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String()),
        sa.column("source", sa.String()),
        sa.column("action", sa.String()),
        sa.column("outcome", sa.String()),
        sa.column("policy", sa.String()),
        sa.column("entity_counts", sa.JSON()),
        sa.column("model", sa.String()),
        sa.column("request_id", sa.String()),
        sa.column("status_code", sa.Integer()),
    ]
    old = sa.table("audit_events_0001", *common)
    new = sa.table(
        "audit_events",
        *[sa.column(c.name, c.type) for c in common],
        sa.column("role", sa.String()),
        sa.column("target", sa.String()),
        sa.column("tier", sa.String()),
        sa.column("details", sa.JSON()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    _copy_foundation_rows(old, new)
    op.drop_table("audit_events_0001")

    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("seq", _SEQ, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"])
    # Rows exist here only inside a purge's own transaction (see appliance/audit/retention.py).
    op.create_table("audit_purge_gate", sa.Column("upto_seq", _SEQ, nullable=False))

    for statement in _POSTGRES_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints")
        op.execute("DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints")
        op.execute("DROP FUNCTION audit_append_only()")
    else:
        for name in (
            "audit_events_no_update",
            "audit_events_no_delete",
            "audit_checkpoints_no_update",
            "audit_checkpoints_no_delete",
        ):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("audit_purge_gate")
    op.drop_index("ix_audit_checkpoints_seq", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    for name in ("request_id", "action", "actor", "time"):
        op.drop_index(f"ix_audit_events_{name}", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        for name in ("role", "target", "tier", "details", "prev_hash", "hash"):
            batch.drop_column(name)
