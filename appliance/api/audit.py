"""`/api/v1/audit`: verify the trail, export it, list events and checkpoints, the public key.

For auditors: every route is read-only on the trail, and verify and export are themselves
recorded (`audit.verified`, `audit.exported`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from appliance.audit import checkpoints
from appliance.audit.export import EventFilter, list_events, start_export
from appliance.audit.store import AuditLog
from appliance.audit.verify import verify_and_record
from appliance.auth.guards import PRINCIPAL_STATE
from appliance.auth.roles import access
from appliance.config import Settings
from appliance.errors import AuditKeyError
from appliance.http.middleware import request_id_of

_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


@dataclass(frozen=True)
class _Who:
    actor: str
    role: str | None
    source: str | None
    request_id: str | None


def _who(request: Request[Any, Any, Any]) -> _Who:
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    return _Who(
        actor=str(getattr(principal, "actor_id", None) or "local"),
        role=getattr(principal, "role", None),
        source=request.client.host if request.client else None,
        request_id=request_id_of(request) or None,
    )


class AuditController(Controller):
    """The auditor's view of the tamper-evident trail: auditors, and keys with scope `audit`."""

    path = "/api/v1/audit"
    tags = ["audit"]
    opt = access(roles=("auditor",), scopes=("audit",))

    @get(
        "/verify",
        summary="Verify the hash chain, signed checkpoints and the witness",
        description="OK, or the first bad sequence number and why. Recorded as `audit.verified`.",
    )
    async def verify(
        self,
        request: Request[Any, Any, Any],
        audit: NamedDependency[AuditLog],
        settings: NamedDependency[Settings],
    ) -> dict[str, Any]:
        """Run the verifier over the whole trail."""
        who = _who(request)
        report = await anyio.to_thread.run_sync(
            lambda: verify_and_record(
                audit,
                witness_setting=settings.audit_witness,
                actor=who.actor,
                role=who.role,
                source=who.source,
                request_id=who.request_id,
            )
        )
        return report.to_dict()

    @get(
        "/export",
        summary="Export events as JSONL or CSV (streamed)",
        description=(
            "Filters: `since` (inclusive) and `until` (exclusive) as ISO 8601 times with a zone, "
            "`actor`, `action` (an event such as `auth.login` or a family such as `auth.*`). "
            "The `audit.exported` event is committed first; the export holds every matching "
            "event before it (`X-Audit-Through-Seq`)."
        ),
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        audit: NamedDependency[AuditLog],
        format: Annotated[str, QueryParameter(description="`jsonl` or `csv`")] = "jsonl",
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        actor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        action: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> Stream:
        """Stream the matching events."""
        event_filter = EventFilter(since=since, until=until, actor=actor, action=action)
        who = _who(request)
        export = await anyio.to_thread.run_sync(
            lambda: start_export(
                audit,
                fmt=format,
                event_filter=event_filter,
                actor=who.actor,
                role=who.role,
                source=who.source,
                request_id=who.request_id,
            )
        )
        return Stream(
            export.content,
            media_type=_MEDIA[format],
            headers={
                "Content-Disposition": (
                    f'attachment; filename="audit-{export.through_seq}.{format}"'
                ),
                "X-Audit-Through-Seq": str(export.through_seq),
                "X-Audit-Event-Id": export.event_id,
                "Cache-Control": "no-store",
            },
        )

    @get("/events", summary="List events, newest first", sync_to_thread=True)
    def events(
        self,
        audit: NamedDependency[AuditLog],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        before_seq: Annotated[int | None, QueryParameter(ge=1)] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        actor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        action: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> dict[str, Any]:
        """A page of events; pass `next_before_seq` as `before_seq` for the next page."""
        event_filter = EventFilter(since=since, until=until, actor=actor, action=action)
        found = list_events(audit.engine, event_filter, limit=limit, before_seq=before_seq)
        next_page = found[-1]["seq"] if len(found) == limit else None
        return {"events": found, "next_before_seq": next_page}

    @get("/checkpoints", summary="Every signed checkpoint, oldest first", sync_to_thread=True)
    def checkpoints(self, audit: NamedDependency[AuditLog]) -> dict[str, Any]:
        """The stored checkpoints, for a witness that pulls them."""
        with audit.engine.connect() as connection:
            found = checkpoints.all_checkpoints(connection)
        return {"checkpoints": [asdict(c) for c in found]}

    @get("/public-key", summary="The Ed25519 public key of the checkpoints", sync_to_thread=False)
    def public_key(self, audit: NamedDependency[AuditLog]) -> dict[str, str]:
        """PEM and key id, to verify checkpoints away from the appliance."""
        key = audit.verify_key
        if key is None:
            raise AuditKeyError("this appliance has no checkpoint signing key")
        return {"algorithm": "Ed25519", "key_id": key.key_id, "pem": key.pem()}
