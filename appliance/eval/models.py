"""Evaluation tables: golden sets and their versions and items, runs and their results, and the
routing overrides an admin applies from a recommendation.

Item inputs, expected answers and model outputs are content: they are sealed with the content key
(AES-GCM, `appliance/documents/crypto.py`) and bound to their row, like documents and batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

TASKS = ("classify", "extract", "summarize", "ask")
"""The tasks a golden set can measure."""


class EvalSet(SQLModel, table=True):
    """A named golden set for one task; its content lives in versions."""

    __tablename__ = "eval_sets"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True, index=True)
    task: str = Field(max_length=20)
    policy: str | None = Field(default=None, max_length=100)
    """The policy its inputs run under (None: the default policy)."""
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Task parameters every run uses (labels, schema, question, max_words); see `params_for`."""
    description: str = Field(default="", max_length=1000)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class EvalSetVersion(SQLModel, table=True):
    """One immutable version of a set: every upload or append makes a new one."""

    __tablename__ = "eval_set_versions"
    __table_args__ = (UniqueConstraint("set_id", "number", name="uq_eval_set_versions_number"),)

    id: int | None = Field(default=None, primary_key=True)
    set_id: int = Field(foreign_key="eval_sets.id", index=True)
    number: int
    items: int
    sha256: str = Field(max_length=64)
    """Digest of the version's content, so two versions can be compared without opening them."""
    author: str = Field(max_length=200)
    comment: str = Field(default="", max_length=500)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class EvalItem(SQLModel, table=True):
    """One (input, expected) pair of a version, sealed."""

    __tablename__ = "eval_items"

    version_id: int = Field(primary_key=True, foreign_key="eval_set_versions.id")
    seq: int = Field(primary_key=True)
    key: str = Field(max_length=200)
    """The item's `id` from the file, or its row number."""
    content_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class EvalRun(SQLModel, table=True):
    """A golden-set version run against a list of models; metrics are filled as it finishes."""

    __tablename__ = "eval_runs"

    id: str = Field(primary_key=True, max_length=32)
    set_id: int = Field(foreign_key="eval_sets.id", index=True)
    set_name: str = Field(max_length=200)
    version: int
    task: str = Field(max_length=20)
    models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Run options: `limit`, `max_tokens`, `judge`."""
    actor: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The starter as the gateway's `Actor` fields, so a resumed run runs as them."""
    status: str = Field(max_length=20, index=True)
    """`queued`, `running`, `completed`, `failed` or `cancelled`."""
    total: int
    metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    lease_holder: str | None = Field(default=None, max_length=200)
    """The claim running the run now (its token, `appliance.db.leases`); None when nobody is."""
    lease_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class EvalResult(SQLModel, table=True):
    """One item run on one model: sealed output, confidence, latency, tokens and costs."""

    __tablename__ = "eval_results"

    run_id: str = Field(primary_key=True, max_length=32, foreign_key="eval_runs.id")
    model: str = Field(primary_key=True, max_length=200)
    seq: int = Field(primary_key=True)
    status: str = Field(max_length=20, index=True)
    """`pending`, `done` or `failed`."""
    output_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    confidence: float | None = None
    latency_ms: float | None = None
    """Wall time of the whole request path (PII steps, routing, model)."""
    generation_ms: float | None = None
    """Time the model spent generating (what tokens per second divide by)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    onprem_cost: float | None = None
    frontier_cost: float | None = None
    served_by: str | None = Field(default=None, max_length=200)
    error_code: str | None = Field(default=None, max_length=50)
    audit_id: str | None = Field(default=None, max_length=32)
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class RoutingOverride(SQLModel, table=True):
    """A routing change applied from an evaluation; the newest row per task is in force."""

    __tablename__ = "routing_overrides"

    id: int | None = Field(default=None, primary_key=True)
    task: str = Field(max_length=50, index=True)
    model: str | None = Field(default=None, max_length=200)
    """Default model for the task (None: leave the settings' choice)."""
    threshold: float | None = None
    """Confidence threshold below which a classification escalates (None: the setting)."""
    run_id: str | None = Field(default=None, max_length=32)
    applied_by: str = Field(max_length=200)
    applied_at: datetime = Field(sa_type=DateTime(timezone=True))
