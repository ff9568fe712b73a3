"""Policies: versioned policy storage, activations, assignments; the pseudonym vault.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("comment", sa.String(1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", "number", name="uq_policy_versions_name_number"),
    )
    op.create_index("ix_policy_versions_name", "policy_versions", ["name"])
    op.create_table(
        "policy_activations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("policy_versions.id"), nullable=False),
        sa.Column("activated_by", sa.String(200), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_policy_activations_name", "policy_activations", ["name"])
    op.create_table(
        "policy_assignments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.UniqueConstraint("kind", "target", name="uq_policy_assignments_kind_target"),
    )
    op.create_table(
        "pii_pseudonyms",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("placeholder", sa.String(80), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("nonce", sa.LargeBinary(12), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("scope", "placeholder", name="uq_pii_pseudonyms_scope_placeholder"),
        sa.UniqueConstraint("scope", "digest", name="uq_pii_pseudonyms_scope_digest"),
    )
    op.create_index("ix_pii_pseudonyms_scope", "pii_pseudonyms", ["scope"])


def downgrade() -> None:
    op.drop_index("ix_pii_pseudonyms_scope", table_name="pii_pseudonyms")
    op.drop_table("pii_pseudonyms")
    op.drop_table("policy_assignments")
    op.drop_index("ix_policy_activations_name", table_name="policy_activations")
    op.drop_table("policy_activations")
    op.drop_index("ix_policy_versions_name", table_name="policy_versions")
    op.drop_table("policy_versions")
