"""The admin dashboard: requests over time, PII by type, blocked and escalated requests,
latency p50/p95 by model, on-prem against frontier-equivalent cost.

Built from the audit trail (counts and decisions only) and the usage table; no content.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from appliance.audit.export import EventFilter, list_events
from appliance.audit.store import AuditLog
from appliance.auth.roles import access
from appliance.gateway import Gateway
from appliance.ui import charts
from appliance.ui.common import render

HOURS = 12
"""How many hourly buckets the requests chart shows."""


def dashboard_data(
    gateway: Gateway, audit: AuditLog, *, now: datetime | None = None
) -> dict[str, Any]:
    """Every chart and the totals, from the last week of audit events and all usage rows."""
    now = now or datetime.now(UTC)
    # Requests through the gateway: with a model (`completion.*`) and without (`pii.*`, with
    # `pii.detector_failed`, a request that failed closed).
    events = [
        event
        for family in ("completion.*", "pii.*")
        for event in list_events(
            audit.engine,
            EventFilter(since=now - timedelta(days=7), action=family),
            limit=10_000,
        )
    ]
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    per_hour: Counter[datetime] = Counter()
    entities: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    # A look at a text (the API's analyze, the workspace preview as one types) is counted on
    # its own: it is not a request that releases anything, and the text is counted when run.
    analyses = sum(1 for event in events if event["action"] == "pii.analyzed")
    events = [event for event in events if event["action"] != "pii.analyzed"]
    for event in events:
        when = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
        hour = when.replace(minute=0, second=0, microsecond=0)
        if hour >= start:
            per_hour[hour] += 1
        for name, count in (event["entity_counts"] or {}).items():
            entities[name.removeprefix("output.")] += int(count)
        outcome = (
            str(event["outcome"])
            if event["action"] == "pii.redacted"
            else str(event["action"]).removeprefix("completion.")
        )
        escalations = int((event["details"] or {}).get("escalations") or 0)
        if outcome == "escalated" or escalations > 0:
            outcomes["escalated"] += 1
        if outcome != "escalated":
            outcomes[outcome if outcome in ("allowed", "redacted", "blocked") else "failed"] += 1
    hours = [start + timedelta(hours=i) for i in range(HOURS)]
    usage_log = gateway.routing.usage
    rows = usage_log.rows() if usage_log is not None else []
    latency: dict[str, list[float]] = defaultdict(list)
    costs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        latency[row.model].append(row.latency_ms)
        costs[row.model][0] += row.onprem_cost
        costs[row.model][1] += row.frontier_cost
    reference = gateway.routing.costs.reference_model
    return {
        "requests": charts.simple(
            "Requests per hour (UTC)",
            [(h.strftime("%H:00"), float(per_hour[h])) for h in hours],
            name="requests",
        ),
        "pii": charts.simple(
            "PII found by type (last 7 days)",
            [(name, float(n)) for name, n in entities.most_common(8)],
            name="findings",
        ),
        "outcomes": charts.simple(
            "Outcomes (last 7 days)",
            [
                (name, float(outcomes[name]))
                for name in ("allowed", "redacted", "blocked", "escalated", "failed")
            ],
            name="requests",
        ),
        "latency": charts.grouped(
            "Latency by model",
            [
                (model, [charts.percentile(v, 0.5), charts.percentile(v, 0.95)])
                for model, v in sorted(latency.items())
            ],
            legend=["p50", "p95"],
            unit=" ms",
        ),
        "cost": charts.grouped(
            "Cost by model: on-prem against frontier-equivalent",
            [(model, values) for model, values in sorted(costs.items())],
            legend=["on-prem", f"frontier ({reference})"],
            unit="$",
        ),
        "totals": {
            "requests": len(events),
            "analyses": analyses,
            "blocked": outcomes["blocked"],
            "escalated": outcomes["escalated"],
            "onprem": sum(v[0] for v in costs.values()),
            "frontier": sum(v[1] for v in costs.values()),
        },
    }


class DashboardController(Controller):
    """`/admin`: the dashboard."""

    include_in_schema = False
    opt = access(roles=("admin",))

    @get("/admin", sync_to_thread=True)
    def dashboard(
        self,
        request: Request[Any, Any, Any],
        gateway: NamedDependency[Gateway],
        audit: NamedDependency[AuditLog],
    ) -> Template:
        """Charts of the box's traffic, privacy decisions, latency and cost."""
        return render(request, "dashboard.html", **dashboard_data(gateway, audit))
