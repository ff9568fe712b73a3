"""The history table: who, which task, which policy, when it expires; the content sealed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel


class HistoryRow(SQLModel, table=True):
    """Retained content of one request; `id` is the request's audit id. `content_sealed` is
    AES-GCM ciphertext of the input, the task parameters and the answer, never plain text."""

    __tablename__ = "history_entries"

    id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=200, index=True)
    task: str = Field(max_length=50)
    policy: str = Field(max_length=200)
    chars: int
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    content_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
