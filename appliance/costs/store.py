"""Write usage rows and read their summary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
from sqlalchemy import Engine, func
from sqlmodel import select

from appliance.costs.models import NO_MODEL, InferenceBackendRow, UsageRecord
from appliance.db.engine import session_scope


class UsageLog:
    """The usage table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def append_sync(self, record: UsageRecord) -> str:
        """Commit one row and return its id."""
        with session_scope(self._engine) as session:
            session.add(record)
        return record.id

    async def append(self, record: UsageRecord) -> str:
        """Commit one row off the event loop."""
        return await anyio.to_thread.run_sync(self.append_sync, record)

    def rows(self, *, request_id: str | None = None) -> list[UsageRecord]:
        """Rows in time order, optionally for one request."""
        with session_scope(self._engine) as session:
            statement = select(UsageRecord).order_by(UsageRecord.time)  # type: ignore[arg-type]
            if request_id is not None:
                statement = statement.where(UsageRecord.request_id == request_id)
            return list(session.exec(statement))

    def summary(self, *, since: datetime | None = None) -> dict[str, Any]:
        """Totals and per-model / per-tier breakdowns since `since` (all time when None)."""
        columns: tuple[Any, ...] = (
            func.count(),
            func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
            func.coalesce(func.sum(UsageRecord.onprem_cost), 0.0),
            func.coalesce(func.sum(UsageRecord.frontier_cost), 0.0),
            func.coalesce(func.avg(UsageRecord.latency_ms), 0.0),
            func.coalesce(func.avg(UsageRecord.ttft_ms), 0.0),
            func.coalesce(func.sum(UsageRecord.escalations), 0),
        )

        def totals(row: Any) -> dict[str, Any]:
            count, pin, pout, onprem, frontier, latency, ttft, escalations = row
            return {
                "requests": int(count),
                "prompt_tokens": int(pin),
                "completion_tokens": int(pout),
                "onprem_cost": round(float(onprem), 8),
                "frontier_cost": round(float(frontier), 8),
                "saved": round(float(frontier) - float(onprem), 8),
                "avg_latency_ms": round(float(latency), 1),
                "avg_ttft_ms": round(float(ttft), 1),
                "escalations": int(escalations),
            }

        with session_scope(self._engine) as session:
            base: Any = select(*columns)
            if since is not None:
                base = base.where(UsageRecord.time >= since)
            overall = totals(session.exec(base).one())
            breakdown: dict[str, dict[str, Any]] = {}
            for key in ("model", "tier", "task"):
                column = getattr(UsageRecord, key)
                grouped: Any = select(column, *columns).group_by(column)
                if key != "task":
                    grouped = grouped.where(column != NO_MODEL)
                if since is not None:
                    grouped = grouped.where(UsageRecord.time >= since)
                breakdown[key] = {
                    str(row[0]): totals(row[1:]) for row in session.exec(grouped).all()
                }
        return {
            "total": overall,
            "by_model": breakdown["model"],
            "by_tier": breakdown["tier"],
            "by_task": breakdown["task"],
        }


def load_backend_rows(engine: Engine) -> list[dict[str, Any]]:
    """The enabled admin-registered backend specs."""
    with session_scope(engine) as session:
        statement = select(InferenceBackendRow).where(InferenceBackendRow.enabled == True)  # noqa: E712
        return [
            dict(row.spec) | {"name": row.name, "kind": row.kind} for row in session.exec(statement)
        ]
