"""SQLModel tables. Migrations in `migrations/versions/` create them; never `create_all`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
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
