"""The auditor's view: filter the trail, read one event, verify the chain, export.

Read-only on the trail; verification is recorded (`audit.verified`) by the same function the
audit API and CLI use, and export is the audit API's download (`audit.exported`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from appliance.audit.events import EVENTS
from appliance.audit.export import EventFilter, list_events
from appliance.audit.store import AuditLog
from appliance.audit.verify import verify_and_record
from appliance.auth.guards import principal_of
from appliance.auth.roles import access
from appliance.config import Settings
from appliance.errors import InvalidInput, NotFound
from appliance.http.middleware import request_id_of
from appliance.ui.common import fragment, render

PAGE = 50


def _time(value: str, name: str) -> datetime | None:
    """A `datetime-local` or ISO value; without a zone it is UTC (the trail's own zone)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a date and time", field=name) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filter_of(query: dict[str, str]) -> EventFilter:
    """The filter form's fields as an `EventFilter` (empty fields are no filter)."""
    return EventFilter(
        since=_time(query.get("since", ""), "since"),
        until=_time(query.get("until", ""), "until"),
        actor=query.get("actor") or None,
        action=query.get("action") or None,
    )


def _families() -> list[str]:
    return sorted({f"{name.split('.')[0]}.*" for name in EVENTS})


class AuditPagesController(Controller):
    """`/audit`: the audit viewer."""

    include_in_schema = False
    path = "/audit"
    opt = access(roles=("auditor",))

    @get("/", sync_to_thread=True)
    def index(self, request: Request[Any, Any, Any], audit: NamedDependency[AuditLog]) -> Template:
        """Filters, the newest events, the verify button and export."""
        query = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        event_filter = filter_of(query)
        before = query.get("before_seq")
        found = list_events(
            audit.engine,
            event_filter,
            limit=PAGE,
            before_seq=int(before) if before and before.isascii() and before.isdigit() else None,
        )
        export = {
            "since": event_filter.since.isoformat() if event_filter.since else None,
            "until": event_filter.until.isoformat() if event_filter.until else None,
            "actor": event_filter.actor,
            "action": event_filter.action,
        }
        return render(
            request,
            "audit.html",
            "_audit_rows.html",
            events=found,
            query=query,
            actions=sorted(EVENTS),
            families=_families(),
            more=found[-1]["seq"] if len(found) == PAGE else None,
            export_query="".join(f"&{k}={quote(v)}" for k, v in export.items() if v),
        )

    @get("/events/{seq:int}", sync_to_thread=True)
    def event(
        self,
        request: Request[Any, Any, Any],
        seq: FromPath[int],
        audit: NamedDependency[AuditLog],
    ) -> Template:
        """One event with every field, its hash and the previous hash."""
        found = list_events(audit.engine, EventFilter(), limit=1, before_seq=seq + 1)
        if not found or found[0]["seq"] != seq:
            raise NotFound(f"no audit event with sequence number {seq}", field="seq")
        return render(request, "audit_event.html", "_audit_event.html", event=found[0])

    @post("/verify", status_code=200)
    async def verify(
        self,
        request: Request[Any, Any, Any],
        audit: NamedDependency[AuditLog],
        settings: NamedDependency[Settings],
    ) -> Template:
        """Verify the chain, checkpoints and witness; the result as a partial."""
        principal = principal_of(request)
        source = request.client.host if request.client else None
        request_id = request_id_of(request) or None
        report = await anyio.to_thread.run_sync(
            lambda: verify_and_record(
                audit,
                witness_setting=settings.audit_witness,
                actor=principal.actor_id,
                role=principal.role,
                source=source,
                request_id=request_id,
            )
        )
        return fragment("_verify.html", report=report)
