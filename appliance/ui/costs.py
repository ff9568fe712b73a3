"""`/admin/costs`: the monthly cost dashboard and the escalation budget (admins).

On-prem cost against frontier-equivalent cost, savings, escalation rate and budget use, per
month and per model, as server-rendered SVG charts. Built from the usage rows only: no content.
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import URLEncodedBody
from litestar.response import Template
from sqlalchemy import Engine

from appliance.audit.store import AuditLog
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.costs.budget import EscalationBudget
from appliance.costs.monthly import overview
from appliance.errors import InvalidInput, NotFound
from appliance.gateway import Gateway
from appliance.ui import charts
from appliance.ui.common import fragment, render

MONTHS = 6
"""How many calendar months the dashboard shows."""


def _money(groups: list[tuple[str, list[float]]]) -> tuple[list[tuple[str, list[float]]], str]:
    """Amounts in dollars, or in micro-dollars when every one is below a cent (a quiet box or a
    young install), so the axis ticks stay distinct."""
    top = max((v for _, values in groups for v in values), default=0.0)
    if 0 < top < 0.01:
        return [(label, [v * 1e6 for v in values]) for label, values in groups], " µ$"
    return groups, "$"


def _budget(gateway: Gateway) -> EscalationBudget:
    budget = gateway.routing.budget
    if budget is None:  # pragma: no cover - every app built by create_app has one
        raise NotFound("no escalation budget is configured")
    return budget


def cost_page(gateway: Gateway, engine: Engine) -> dict[str, Any]:
    """Charts and figures of the last `MONTHS` months and of the current one."""
    budget = _budget(gateway)
    reference_model = gateway.routing.costs.reference_model
    body = overview(engine, budget, reference_model=reference_model, months=MONTHS)
    months: list[dict[str, Any]] = body["months"]
    current = months[-1]
    reference = body["frontier_model"]
    monthly, monthly_unit = _money(
        [(m["month"], [m["onprem_cost"], m["external_cost"], m["frontier_cost"]]) for m in months]
    )
    per_model, model_unit = _money(
        [
            (name, [line["actual_cost"], line["frontier_cost"]])
            for name, line in current["by_model"].items()
        ]
    )
    return {
        "current": current,
        "budget": body["budget"],
        "reference": reference,
        "monthly": charts.grouped(
            "Cost per month: on-prem, external and frontier-equivalent",
            monthly,
            legend=["on-prem", "external", f"frontier-equivalent ({reference})"],
            unit=monthly_unit,
        ),
        "escalation": charts.simple(
            "Escalation rate per month",
            [(m["month"], round(m["escalation_rate"] * 100, 1)) for m in months],
            unit="%",
            name="escalated",
        ),
        "models": charts.grouped(
            f"This month by model ({current['month']}): actual against frontier-equivalent",
            per_model,
            legend=["actual", f"frontier-equivalent ({reference})"],
            unit=model_unit,
        ),
    }


def _cap_from_form(raw: str) -> float | None:
    raw = raw.strip().removeprefix("$")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise InvalidInput(
            "the budget must be an amount in US dollars, or empty for no cap", field="cap_usd"
        ) from exc
    return value


class CostPagesController(Controller):
    """The monthly cost dashboard and the budget form."""

    include_in_schema = False
    path = "/admin/costs"
    opt = access(roles=("admin",))

    @get("/")
    async def costs(
        self,
        request: Request[Any, Any, Any],
        gateway: NamedDependency[Gateway],
        engine: NamedDependency[Engine],
    ) -> Template:
        """The dashboard."""
        context = await anyio.to_thread.run_sync(lambda: cost_page(gateway, engine))
        return render(request, "costs.html", **context, note=None)

    @post("/budget", status_code=200)
    async def budget(
        self,
        request: Request[Any, Any, Any],
        gateway: NamedDependency[Gateway],
        audit: NamedDependency[AuditLog],
        data: URLEncodedBody[dict[str, str]],
    ) -> Template:
        """Set the monthly escalation budget (audited); answers the budget panel."""
        cap = _cap_from_form(str(data.get("cap_usd", "")))
        changed = await _budget(gateway).change(cap, actor=actor_for(request), audit=audit)
        status = changed.to_dict()
        shown = "no cap" if cap is None else f"${cap:,.2f} a month"
        return fragment("_costs_budget.html", budget=status, note=f"Budget set: {shown}.")
