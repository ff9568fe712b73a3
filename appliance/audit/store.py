"""Write audit rows. The caller awaits the commit before it answers the request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import Engine
from sqlmodel import select

from appliance.db.engine import session_scope
from appliance.db.models import AuditEvent


@dataclass(frozen=True)
class AuditRecord:
    """What one audit row says. There is deliberately no field for request or answer text."""

    actor: str
    action: str
    outcome: str
    source: str | None = None
    policy: str | None = None
    entity_counts: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    request_id: str | None = None
    status_code: int | None = None


class AuditLog:
    """Appends audit rows to the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def append_sync(self, record: AuditRecord, *, event_id: str | None = None) -> str:
        """Commit one row and return its id."""
        values: dict[str, Any] = {
            "actor": record.actor,
            "action": record.action,
            "outcome": record.outcome,
            "source": record.source,
            "policy": record.policy,
            "entity_counts": dict(record.entity_counts),
            "model": record.model,
            "request_id": record.request_id,
            "status_code": record.status_code,
        }
        if event_id is not None:
            values["id"] = event_id
        event = AuditEvent(**values)
        with session_scope(self._engine) as session:
            session.add(event)
        return event.id

    async def append(self, record: AuditRecord, *, event_id: str | None = None) -> str:
        """Commit one row off the event loop and return its id."""
        return await anyio.to_thread.run_sync(lambda: self.append_sync(record, event_id=event_id))

    def recent(self, limit: int = 100) -> list[AuditEvent]:
        """The newest rows first."""
        with session_scope(self._engine) as session:
            statement = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)  # type: ignore[union-attr]
            return list(session.exec(statement))
