"""SQLModel tables. Migrations in `migrations/versions/` create them; never `create_all`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


class UserBase(SQLModel):
    """Fields of a local account that may be shown."""

    username: str = Field(index=True, unique=True, max_length=150)
    role: str = Field(default="staff", max_length=20)
    disabled: bool = False
    must_change_password: bool = True


class User(UserBase, table=True):
    """A local account; the password is stored only as an argon2id hash."""

    __tablename__ = "users"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    # Identity (migration 0004): SSO subject, failed-login backoff and lockout, last sign-in.
    oidc_subject: str | None = Field(default=None, max_length=255, unique=True)
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_login_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Review queue (migration 0008): a staff account that may review queued outputs.
    reviewer: bool = False
    # Teams (migration 0011): the team whose policy assignment the user's requests run under.
    team: str | None = Field(default=None, max_length=100)


class AuditEvent(SQLModel, table=True):
    """One audited action. Counts, hashes and decisions only; never request or answer text."""

    __tablename__ = "audit_events"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, index=True, unique=True)
    time: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    actor: str = Field(max_length=200)
    source: str | None = Field(default=None, max_length=100)
    action: str = Field(max_length=100)
    outcome: str = Field(max_length=50)
    policy: str | None = Field(default=None, max_length=200)
    entity_counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    model: str | None = Field(default=None, max_length=200)
    request_id: str | None = Field(default=None, max_length=64)
    status_code: int | None = None
    # The tamper-evident trail (appliance/audit/chain.py): who, on what, how, and the links.
    role: str | None = Field(default=None, max_length=50)
    target: str | None = Field(default=None, max_length=200)
    tier: str | None = Field(default=None, max_length=50)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement `{seq, head_hash, time}` about the audit chain (Ed25519)."""

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(index=True)
    head_hash: str = Field(max_length=64)
    time: datetime = Field(sa_type=DateTime(timezone=True))
    kind: str = Field(max_length=20)
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=200)


class PolicyVersion(SQLModel, table=True):
    """One immutable version of a policy: its YAML, content hash, author, time and comment."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("name", "number", name="uq_policy_versions_name_number"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    number: int
    version: str = Field(max_length=64)
    source: str = Field(sa_type=Text)
    author: str = Field(max_length=200)
    comment: str = Field(default="", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class PolicyActivation(SQLModel, table=True):
    """Which version of a policy became active when, and by whom; the newest row is in force."""

    __tablename__ = "policy_activations"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    version_id: int = Field(foreign_key="policy_versions.id")
    activated_by: str = Field(max_length=200)
    activated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class PolicyAssignment(SQLModel, table=True):
    """A policy assigned to an API key, a team or a task (resolution: key, team, task, default)."""

    __tablename__ = "policy_assignments"
    __table_args__ = (UniqueConstraint("kind", "target", name="uq_policy_assignments_kind_target"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=10)
    target: str = Field(max_length=200)
    policy: str = Field(max_length=100)
    # Migration 0010: other policies a request under this assignment may name (comma list);
    # the assigned one is a floor, and naming anything else is refused.
    allowed: str = Field(default="", max_length=1000)
