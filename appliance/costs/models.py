"""Tables of the inference capability: one usage row per request, admin-managed backends."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from appliance.db.models import utcnow

NO_MODEL = ""
"""`model` and `tier` of a request no model served (PII analysis and redaction)."""


class UsageRecord(SQLModel, table=True):
    """Tokens, timings and both costs of one served request. No text, ever."""

    __tablename__ = "usage_records"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    time: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)
    request_id: str | None = Field(default=None, max_length=64, index=True)
    audit_id: str | None = Field(default=None, max_length=32)
    actor: str = Field(max_length=200)
    task: str = Field(max_length=50)
    model: str = Field(max_length=200)
    tier: str = Field(max_length=20)
    node: str | None = Field(default=None, max_length=300)
    route_reason: str = Field(default="", max_length=300)
    escalations: int = 0
    generations: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    latency_ms: float = 0.0
    onprem_cost: float = 0.0
    frontier_cost: float = 0.0
    frontier_model: str = Field(default="", max_length=100)
    outcome: str = Field(default="ok", max_length=50)


class InferenceBackendRow(SQLModel, table=True):
    """A backend pool an admin registered; `spec` validates as `registry.BackendSpec`."""

    __tablename__ = "inference_backends"

    name: str = Field(primary_key=True, max_length=100)
    kind: str = Field(max_length=30)
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
