"""Identity tables: browser sessions, API keys and pending single-sign-on logins.

Only digests of secrets are stored: a session row is keyed by the SHA-256 of its cookie value, an
API key by an HMAC of the key under the server pepper. Migration 0004 creates these tables.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from appliance.db.models import utcnow


def _new_id() -> str:
    return uuid.uuid4().hex


class UserSession(SQLModel, table=True):
    """A signed-in browser. Idle and absolute expiry are checked on every request."""

    __tablename__ = "sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    source: str | None = Field(default=None, max_length=100)


class ApiKeyBase(SQLModel):
    """Fields of an API key that may be shown (never the key or its digest)."""

    name: str = Field(max_length=100)
    prefix: str = Field(index=True, unique=True, max_length=16)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    policy: str | None = Field(default=None, max_length=100)
    owner_id: str | None = Field(default=None, foreign_key="users.id", max_length=32)
    team: str | None = Field(default=None, max_length=100)
    """The key's own team (migration 0011); without one, its owner's team applies."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ApiKey(ApiKeyBase, table=True):
    """A key for tools; `digest` is HMAC-SHA256(pepper, key)."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=_new_id, primary_key=True, max_length=32)
    digest: str = Field(max_length=64)


class OidcLogin(SQLModel, table=True):
    """A single-sign-on attempt between the redirect to the provider and the callback.

    Keyed by the SHA-256 of a random value held in the browser's login cookie, so `state`,
    `nonce` and the PKCE verifier are bound to the browser that started the attempt. The row is
    deleted when the callback arrives, whatever its outcome: a replayed callback finds nothing.
    """

    __tablename__ = "oidc_logins"

    id_hash: str = Field(primary_key=True, max_length=64)
    state: str = Field(max_length=128)
    nonce: str = Field(max_length=128)
    code_verifier: str = Field(max_length=128)
    redirect_uri: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
