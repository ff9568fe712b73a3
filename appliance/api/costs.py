"""`/api/v1/usage/monthly` and `/api/v1/usage/budget`: the monthly cost report and the
escalation budget (read by admins and auditors; set by admins, audited `budget.changed`)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from appliance.api.schemas import error_responses
from appliance.audit.store import AuditLog
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.costs.budget import EscalationBudget
from appliance.costs.monthly import overview
from appliance.errors import NotFound
from appliance.gateway import Gateway


class BudgetIn(BaseModel):
    """The new monthly cap in US dollars; null removes the cap."""

    model_config = ConfigDict(extra="forbid")
    cap_usd: float | None = Field(ge=0, le=1e9)


def budget_of(gateway: Gateway) -> EscalationBudget:
    """The app's escalation budget."""
    budget = gateway.routing.budget
    if budget is None:  # pragma: no cover - every app built by create_app has one
        raise NotFound("no escalation budget is configured")
    return budget


class CostsController(Controller):
    """Monthly costs, savings, escalation rate and the escalation budget."""

    path = "/api/v1/usage"
    tags = ["usage"]
    opt = access(roles=("admin", "auditor"), scopes=("admin", "audit"))

    @get("/monthly", summary="Monthly cost report", responses=error_responses(401, 403, 422))
    async def monthly(
        self,
        gateway: NamedDependency[Gateway],
        engine: NamedDependency[Engine],
        months: Annotated[int, QueryParameter(ge=1, le=36)] = 6,
    ) -> dict[str, Any]:
        """Per calendar month (UTC) and model: on-prem, external and frontier-equivalent cost,
        savings and escalation rate; and this month's escalation budget."""
        budget = budget_of(gateway)
        reference = gateway.routing.costs.reference_model
        return await anyio.to_thread.run_sync(
            lambda: overview(engine, budget, reference_model=reference, months=months)
        )

    @get("/budget", summary="The escalation budget", responses=error_responses(401, 403))
    async def budget(self, gateway: NamedDependency[Gateway]) -> dict[str, Any]:
        """Cap, this month's external spend, what is left, and when it resets."""
        return (await anyio.to_thread.run_sync(budget_of(gateway).status)).to_dict()

    @put(
        "/budget",
        summary="Set the escalation budget",
        responses=error_responses(400, 401, 403, 422),
        opt=access(roles=("admin",), scopes=("admin",)),
    )
    async def put_budget(
        self,
        request: Request[Any, Any, Any],
        gateway: NamedDependency[Gateway],
        audit: NamedDependency[AuditLog],
        data: JSONBody[BudgetIn],
    ) -> dict[str, Any]:
        """Set the monthly cap on external spend (null: no cap); audited."""
        status = await budget_of(gateway).change(
            data.cap_usd, actor=actor_for(request), audit=audit
        )
        return status.to_dict()
