"""One audit row per request, allowed or refused.

A handler records what a request did with its typed event (a completion, an upload, a sign-in,
a denied key...). A request that wrote no row of its own — a read, or a refusal before or inside
its handler (not signed in, forbidden, not found, bad body, too large, rate limited) — gets one
here: `request.served`, `request.refused`, or for the chat endpoints `completion.rejected` /
`completion.failed`. It is committed before the response's last message is sent, so a client
that has read a whole answer knows its row exists (a stream's own row comes before `done`).

Which rows a request wrote is counted by `appliance.audit.requests`; a refusal that is accounted
for otherwise carries `audited = True` (the failed-key throttle counts its refusals in one
`auth.throttled` row per address and window).

Not audited, as they are not requests in that sense: the probes (`/healthz`, `/readyz`, and
`/ui/status`, the home page's readiness poll), the API description (`/schema`), static assets
(`/static`), and a path outside the API that matches no route (a browser's `/favicon.ico`).
A Prometheus scrape of `/metrics` that is served writes no row either (it reads no content, and
a row every few seconds per replica would bury the trail's events); a refused one is audited
like any other refusal.

Anonymous refusals are bounded: past `auth_failures_per_minute` of them from one address in a
minute, the rest of that minute is counted in one `request.refused` row (`outcome` `flood`,
`details.count`) written when the minute ends, so a flood cannot grow the trail a row a request.
On PostgreSQL the count is kept in the database (`auth.ratelimit`): the bound holds across
replicas, and one of them writes the minute's row.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.enums import ScopeType
from litestar.types import Message, Scope

from appliance.audit.events import (
    GENERIC_COMPLETION,
    GENERIC_REFUSAL,
    AuditRecord,
    RequestRefused,
    RequestServed,
)
from appliance.audit.requests import RequestRows
from appliance.audit.store import AuditLog
from appliance.auth.guards import PRINCIPAL_STATE, route_target
from appliance.auth.ratelimit import (
    FailureThrottle,
    LocalFailureThrottle,
    Refusal,
    report_when_over,
)
from appliance.errors import RateLimitsUnavailable
from appliance.http.errors import describe
from appliance.http.middleware import ROWS_STATE, SCRAPES

_REFUSAL_STATE = "audit_refusal"
_STATUS_STATE = "audit_status"
_DONE_STATE = "audit_done"

API_PREFIXES = ("/api/", "/v1/", "/ollama/")
"""The REST API and the OpenAI- and Ollama-compatible endpoints."""

UNAUDITED_PATHS = ("/healthz", "/readyz", "/ui/status")
UNAUDITED_PREFIXES = ("/schema", "/static/")
"""Probes (`/ui/status` is readiness for the home page, polled every few seconds), the API
description and static assets: not requests in the audited sense."""

CHAT_PATHS = frozenset(
    {"/api/v1/chat", "/v1/chat/completions", "/ollama/api/chat", "/ollama/api/generate"}
)
"""Refusals of these are refused completions (`completion.rejected`, ...)."""

_CODES = {400: "malformed_body", 401: "unauthorized", 403: "forbidden", 404: "not_found"}
_CODES |= {405: "method_not_allowed", 413: "payload_too_large", 422: "invalid_input"}
_CODES |= {429: "rate_limited"}


def audited_path(scope: Scope) -> bool:
    """Whether a request to this path writes a row (see the module docstring)."""
    path = str(scope.get("path", ""))
    if path in UNAUDITED_PATHS or path.startswith(UNAUDITED_PREFIXES):
        return False
    return bool(scope.get("path_template")) or path.startswith(API_PREFIXES)


class RequestAudit:
    """The `after_exception` and `before_send` hooks that write a request's row when its handler
    wrote none, and the per-address bound on anonymous refusals."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        anonymous_per_minute: int,
        throttle: FailureThrottle | None = None,
        window_s: float = 60.0,
    ) -> None:
        self.audit = audit
        self.anonymous_per_minute = anonymous_per_minute
        # Shared by every replica on PostgreSQL (`auth.ratelimit.failure_throttle`).
        self.anonymous = throttle if throttle is not None else LocalFailureThrottle(window_s)
        self._pending: set[asyncio.Task[None]] = set()

    async def after_exception(self, exc: BaseException, scope: Scope) -> None:
        """Remember what refused the request, for the row written as its answer goes out."""
        if scope["type"] != ScopeType.HTTP:
            return
        state = scope.setdefault("state", {})
        state[_REFUSAL_STATE] = (describe(exc), bool(getattr(exc, "audited", False)))

    async def before_send(self, message: Message, scope: Scope) -> None:
        """Write the request's row, if it has none yet, before its last message is sent."""
        if scope["type"] != ScopeType.HTTP:
            return
        state = scope.setdefault("state", {})
        if message["type"] == "http.response.start":
            state[_STATUS_STATE] = int(message["status"])
            return
        if message["type"] != "http.response.body" or message.get("more_body", False):
            return
        if state.get(_DONE_STATE) or not audited_path(scope):
            return
        state[_DONE_STATE] = True
        rows = state.get(ROWS_STATE)
        if isinstance(rows, RequestRows) and rows.count:
            return
        record = await self._record(scope, state)
        if record is not None:
            await self.audit.append(record)

    async def _record(self, scope: Scope, state: dict[str, Any]) -> AuditRecord | None:
        app = scope["litestar_app"]
        principal = state.get(PRINCIPAL_STATE)
        client = scope.get("client")
        source = client[0][:100] if client else None
        status = int(state.get(_STATUS_STATE, 500))
        refusal = state.get(_REFUSAL_STATE)
        if refusal is not None:
            (status, error), accounted = refusal
            if accounted:
                return None
            outcome = str(error.get("code") or "error")
        elif status >= 400:
            outcome = _CODES.get(status, "error")
        elif scope["path"] in SCRAPES:
            return None  # a served scrape (see the module docstring)
        else:
            outcome = "ok"
        target = route_target(scope, app.state.identity.pepper)
        fields: dict[str, Any] = {
            "actor": principal.actor_id if principal is not None else "anonymous",
            "role": principal.role if principal is not None else None,
            "source": source,
            "target": target,
            "outcome": outcome,
            "request_id": str(state.get("request_id", "")) or None,
            "status_code": status,
            "details": {"method": str(scope.get("method", ""))},
        }
        if status < 400:
            return RequestServed(**fields).record()
        if principal is None and not await self._admit_anonymous(source or "unknown"):
            return None
        action = GENERIC_COMPLETION if scope["path"].rstrip("/") in CHAT_PATHS else GENERIC_REFUSAL
        return AuditRecord(action=action, **fields)

    async def _admit_anonymous(self, address: str) -> bool:
        """Whether an anonymous refusal from `address` gets a row of its own; past the limit it
        is counted in the window's aggregate row instead."""
        try:
            refusal = await self.anonymous.refuse_async(address, self.anonymous_per_minute)
            if refusal is None:
                await self.anonymous.failed_async(address)
                return True
        except RateLimitsUnavailable:
            return True  # a row of its own, then: the trail is not thinned on a guess
        if refusal.first:
            self._count_window(address, refusal)
        return False

    def _count_window(self, address: str, refusal: Refusal) -> None:
        """Write the aggregate row of `address` when its window ends (or the app stops first),
        once across every replica."""
        report_when_over(
            self.anonymous,
            address,
            refusal,
            self._pending,
            audit=self.audit,
            event=RequestRefused,
            outcome="flood",
        )
