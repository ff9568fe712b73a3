"""Routing overrides: the default model and confidence threshold an admin applied per task.

The routing step (`appliance.gateway.routing`) asks `for_task` on every task request. The newest row
per task is in force; rows are kept, so the history of applied changes stays readable. Reads are
cached for a few seconds (one small query per interval, not per request); `apply` clears the
cache of this process at once, and other replicas see the change when their cache runs out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import col, select

from appliance.db.engine import session_scope
from appliance.db.models import utcnow
from appliance.errors import InvalidInput
from appliance.eval.models import RoutingOverride

CACHE_S = 5.0


@dataclass(frozen=True)
class Override:
    """What routing uses for one task instead of the settings."""

    task: str
    model: str | None
    threshold: float | None
    run_id: str | None

    def note(self) -> str:
        """How the receipt's route reason names the change."""
        parts = []
        if self.model is not None:
            parts.append(f"default model {self.model}")
        if self.threshold is not None:
            parts.append(f"confidence threshold {self.threshold:.2f}")
        source = f" (evaluation run {self.run_id})" if self.run_id else ""
        return f"applied routing: {', '.join(parts)}{source}"


class RoutingOverrides:
    """The overrides table with a short read cache."""

    def __init__(self, engine: Engine, *, cache_s: float = CACHE_S) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: dict[str, Override] | None = None
        self._loaded_at = 0.0

    def _load(self) -> dict[str, Override]:
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(RoutingOverride).order_by(col(RoutingOverride.id).desc())
            ).all()
        found: dict[str, Override] = {}
        for row in rows:
            if row.task not in found and (row.model is not None or row.threshold is not None):
                found[row.task] = Override(row.task, row.model, row.threshold, row.run_id)
        return found

    def current(self) -> dict[str, Override]:
        """Every task's override in force."""
        with self._lock:
            if self._cached is None or time.monotonic() - self._loaded_at > self.cache_s:
                self._cached = self._load()
                self._loaded_at = time.monotonic()
            return self._cached

    def for_task(self, task: str | None) -> Override | None:
        """The override of `task`, if an admin applied one."""
        if task is None:
            return None
        return self.current().get(task)

    def apply(
        self,
        *,
        task: str,
        model: str | None,
        threshold: float | None,
        run_id: str | None,
        actor: str,
    ) -> Override:
        """Put a new override in force (None for both fields: back to the settings)."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InvalidInput("threshold must be between 0 and 1", field="threshold")
        with session_scope(self.engine) as session:
            session.add(
                RoutingOverride(
                    task=task,
                    model=model,
                    threshold=threshold,
                    run_id=run_id,
                    applied_by=actor[:200],
                    applied_at=utcnow(),
                )
            )
        with self._lock:
            self._cached = None
        return Override(task, model, threshold, run_id)
