"""Routing overrides: the default model and confidence threshold an admin applied per task.

The routing step (`appliance.gateway.routing`) asks `for_task` on every task request. The newest row
per task is in force; rows are kept, so the history of applied changes stays readable. The table
is read again only when the `routing` change counter moved (a trigger bumps it on every write), so
an override applied on one replica, or by hand in the database, is in force on every replica from
the next request on, at the cost of one primary-key read per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import col, select

from appliance.db.counters import CounterMemo
from appliance.db.engine import session_scope
from appliance.db.models import utcnow
from appliance.errors import InvalidInput
from appliance.eval.models import RoutingOverride


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
    """The overrides table, read again only when the `routing` counter moved."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._memo: CounterMemo[None, dict[str, Override]] = CounterMemo(engine, "routing")

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
        version = self._memo.version()
        found = self._memo.get(None, version=version)
        if found is None:
            found = self._load()
            self._memo.put(None, found, version=version)
        return found

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
        return Override(task, model, threshold, run_id)
