"""The monthly cost report: on-prem cost against frontier-equivalent cost, per month and model.

Built from the usage rows (counts, tokens and costs only). "On-prem" is what the box's own
tiers cost; "external" is what requests served by an external tier cost (the spend the
escalation budget caps); savings are the frontier-equivalent cost minus both.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select

from appliance.costs.budget import EXTERNAL_TIER, EscalationBudget, month_start
from appliance.costs.models import NO_MODEL, UsageRecord
from appliance.db.engine import session_scope
from appliance.errors import InvalidInput


@dataclass
class CostLine:
    """Totals of one month, or of one model in a month."""

    requests: int = 0
    escalated: int = 0
    external_requests: int = 0
    onprem_cost: float = 0.0
    external_cost: float = 0.0
    frontier_cost: float = 0.0

    def add(self, row: UsageRecord) -> None:
        """Count one usage row."""
        self.requests += 1
        self.escalated += 1 if row.escalations > 0 else 0
        if row.tier == EXTERNAL_TIER:
            self.external_requests += 1
            self.external_cost += row.onprem_cost
        else:
            self.onprem_cost += row.onprem_cost
        self.frontier_cost += row.frontier_cost

    @property
    def actual_cost(self) -> float:
        """What the requests really cost: on-prem plus external."""
        return self.onprem_cost + self.external_cost

    @property
    def savings(self) -> float:
        """Frontier-equivalent cost minus the actual cost."""
        return self.frontier_cost - self.actual_cost

    @property
    def escalation_rate(self) -> float:
        """Share of requests that moved up at least one tier."""
        return self.escalated / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As the API returns it (US dollars)."""
        return {
            "requests": self.requests,
            "escalated": self.escalated,
            "escalation_rate": round(self.escalation_rate, 4),
            "external_requests": self.external_requests,
            "onprem_cost": round(self.onprem_cost, 8),
            "external_cost": round(self.external_cost, 8),
            "actual_cost": round(self.actual_cost, 8),
            "frontier_cost": round(self.frontier_cost, 8),
            "savings": round(self.savings, 8),
        }


@dataclass
class MonthReport:
    """One month: totals and per-model lines."""

    month: str
    total: CostLine = field(default_factory=CostLine)
    models: dict[str, CostLine] = field(default_factory=lambda: defaultdict(CostLine))

    def to_dict(self) -> dict[str, Any]:
        """As the API returns it."""
        return {
            "month": self.month,
            **self.total.to_dict(),
            "by_model": {name: line.to_dict() for name, line in sorted(self.models.items())},
        }


def shift_months(start: datetime, months: int) -> datetime:
    """The first day of the month `months` before (negative) or after `start`'s month."""
    index = start.year * 12 + (start.month - 1) + months
    return start.replace(year=index // 12, month=index % 12 + 1, day=1)


def monthly_report(
    engine: Engine, *, months: int = 6, now: datetime | None = None
) -> list[MonthReport]:
    """The last `months` calendar months (UTC), oldest first, each with per-model lines."""
    if not 1 <= months <= 36:
        raise InvalidInput("months must be from 1 to 36", field="months")
    now = now or datetime.now(UTC)
    current = month_start(now)
    first = shift_months(current, -(months - 1))
    names = [shift_months(first, i).strftime("%Y-%m") for i in range(months)]
    reports = {name: MonthReport(name) for name in names}
    with session_scope(engine) as session:
        rows = session.exec(select(UsageRecord).where(col(UsageRecord.time) >= first)).all()
        for row in rows:
            when = row.time if row.time.tzinfo else row.time.replace(tzinfo=UTC)
            report = reports.get(when.astimezone(UTC).strftime("%Y-%m"))
            if report is None:  # after `now` (a clock moved back): not part of any month shown
                continue
            if row.model == NO_MODEL:  # a PII request without a model costs no model time
                continue
            report.total.add(row)
            report.models[row.model].add(row)
    return list(reports.values())


def overview(
    engine: Engine, budget: EscalationBudget, *, reference_model: str, months: int = 6
) -> dict[str, Any]:
    """The report with this month's budget status, as the API and the dashboard show it."""
    return {
        "months": [r.to_dict() for r in monthly_report(engine, months=months)],
        "budget": budget.status().to_dict(),
        "frontier_model": reference_model,
    }
