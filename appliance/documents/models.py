"""The documents table: metadata in the clear, name and text sealed (AES-GCM)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel


class DocumentRow(SQLModel, table=True):
    """One uploaded document. `name_sealed` and `text_sealed` are ciphertext, never plain text."""

    __tablename__ = "documents"

    id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=200, index=True)
    kind: str = Field(max_length=20)
    size_bytes: int
    chars: int
    pages: int | None = None
    sha256: str = Field(max_length=64)
    policy: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    name_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    text_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
