"""Batch tables: one row per job, one per item; item inputs and results are sealed (AES-GCM)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel


class BatchJob(SQLModel, table=True):
    """A batch: the task it runs, who it runs as, and its state."""

    __tablename__ = "batch_jobs"

    id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=200, index=True)
    actor: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The caller as the gateway's `Actor` fields, so a resumed job runs as its owner."""
    task: str = Field(max_length=50)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    policy: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=20, index=True)
    """`queued`, `running`, `completed` or `cancelled`."""
    total: int
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)


class BatchItem(SQLModel, table=True):
    """One input line of a job and, once run, its sealed result or its error code."""

    __tablename__ = "batch_items"

    job_id: str = Field(primary_key=True, max_length=32, foreign_key="batch_jobs.id")
    seq: int = Field(primary_key=True)
    status: str = Field(max_length=20, index=True)
    """`pending`, `done` or `failed`."""
    input_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    result_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    error_code: str | None = Field(default=None, max_length=50)
    audit_id: str | None = Field(default=None, max_length=32)
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    lease_holder: str | None = Field(default=None, max_length=200)
    """The claim running the item now (its token, `appliance.db.leases`); None when nobody is."""
    lease_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    attempts: int = 0
    """How often the item was claimed: more than one means a replica stopped while running it."""
