"""The review queue's table: metadata in the clear, content (if the policy keeps any) sealed.

Migration 0008 creates it. `content_sealed` is AES-GCM ciphertext bound to the row id
(`appliance.documents.crypto.Sealer`); it is NULL when the policy retains no content, and is
wiped when the item expires.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel

from appliance.db.models import utcnow

STATUSES = ("pending", "accepted", "corrected")
REASONS = ("low_confidence", "output_invalid")


class ReviewItem(SQLModel, table=True):
    """One production output queued for review, with why it was queued."""

    __tablename__ = "review_items"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), index=True
    )
    task: str = Field(max_length=50)
    reason: str = Field(max_length=30)
    confidence: float | None = None
    model: str | None = Field(default=None, max_length=200)
    tier: str | None = Field(default=None, max_length=20)
    policy: str | None = Field(default=None, max_length=200)
    actor: str = Field(max_length=200)
    audit_id: str | None = Field(default=None, max_length=32)
    request_id: str | None = Field(default=None, max_length=64)
    receipt: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The privacy receipt: counts, actions, policy, route and ids; never text."""
    input_digest: str = Field(max_length=64)
    output_digest: str | None = Field(default=None, max_length=64)
    input_chars: int = 0
    content_kept: bool = False
    content_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)
    status: str = Field(default="pending", max_length=20, index=True)
    reviewer: str | None = Field(default=None, max_length=200)
    reviewed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    golden_set: str | None = Field(default=None, max_length=200)
    golden_version: int | None = None
