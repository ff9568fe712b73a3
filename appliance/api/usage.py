"""`GET /api/v1/usage/summary`: tokens, latency and both costs, in total and per model/tier/task."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from appliance.auth.roles import access
from appliance.errors import InvalidInput
from appliance.gateway import Gateway


class UsageController(Controller):
    """Usage and cost reporting."""

    path = "/api/v1/usage"
    tags = ["usage"]
    opt = access(roles=("admin", "auditor"), scopes=("admin", "audit"))

    @get("/summary", summary="Usage and cost summary")
    async def summary(
        self, gateway: NamedDependency[Gateway], since: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        """Totals since `since` (ISO 8601), else all time: on-prem vs frontier-equivalent cost."""
        start: datetime | None = None
        if since is not None:
            try:
                start = datetime.fromisoformat(since)
            except ValueError as exc:
                raise InvalidInput("since must be an ISO 8601 time", field="since") from exc
        usage = gateway.routing.usage
        if usage is None:
            return {"total": {}, "by_model": {}, "by_tier": {}, "by_task": {}}
        body = await anyio.to_thread.run_sync(lambda: usage.summary(since=start))
        body["frontier_model"] = gateway.routing.costs.reference_model
        return body
