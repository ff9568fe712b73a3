"""The escalation budget: a monthly cap on what external tiers may cost.

Spend is the cost of requests served by an external tier in the current calendar month (UTC),
read from the usage rows. The cap starts as the `escalation_budget_usd` setting; an admin can set
it at runtime, which adds a row here (newest row wins, so the rows are also its history). What
happens past the cap is the policy's `routing.over_budget`: `stay_on_prem` or `refuse`.

`EscalationBudget.change` is the one way the API and the console change the cap: the new row and
its `budget.changed` audit event commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import DateTime, Engine, func
from sqlmodel import Field, Session, SQLModel, col, select

from appliance.audit.events import BudgetChanged
from appliance.audit.store import AuditLog
from appliance.auth.actor import Actor
from appliance.costs.models import UsageRecord
from appliance.db.engine import session_scope
from appliance.db.models import utcnow
from appliance.errors import InvalidInput

EXTERNAL_TIER = "external"
BUDGET_TARGET = "escalation_budget"
"""The `target` of `budget.changed` events."""


class BudgetChange(SQLModel, table=True):
    """One setting of the monthly cap by an admin; `cap_usd` NULL means no cap."""

    __tablename__ = "escalation_budget_changes"

    id: int | None = Field(default=None, primary_key=True)
    cap_usd: float | None = None
    changed_by: str = Field(max_length=200)
    changed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


def month_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of `now`'s month."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of the month after `now`'s."""
    start = month_start(now)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


@dataclass(frozen=True)
class BudgetStatus:
    """The cap, this month's external spend, and what is left."""

    month: str
    cap_usd: float | None
    spent_usd: float
    source: str
    """`setting` (the default) or `admin` (set at runtime)."""
    resets_at: datetime

    @property
    def remaining_usd(self) -> float | None:
        """What may still be spent this month; None without a cap."""
        return None if self.cap_usd is None else max(self.cap_usd - self.spent_usd, 0.0)

    @property
    def exhausted(self) -> bool:
        """Whether spend has reached the cap (a cap of 0 forbids all external spend)."""
        return self.cap_usd is not None and self.spent_usd >= self.cap_usd

    @property
    def used_fraction(self) -> float | None:
        """Spend as a fraction of the cap (capped at 1); None without a cap."""
        if self.cap_usd is None:
            return None
        if self.cap_usd <= 0:
            return 1.0
        return min(self.spent_usd / self.cap_usd, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """As the API returns it."""
        return {
            "month": self.month,
            "cap_usd": self.cap_usd,
            "spent_usd": round(self.spent_usd, 8),
            "remaining_usd": None if self.remaining_usd is None else round(self.remaining_usd, 8),
            "exhausted": self.exhausted,
            "source": self.source,
            "resets_at": self.resets_at.isoformat(),
        }


def check_cap(value: float | None) -> float | None:
    """A cap must be a finite amount of at least 0 (None: no cap)."""
    if value is None:
        return None
    if not isinstance(value, int | float) or value != value or value < 0 or value > 1e9:
        raise InvalidInput("the budget must be an amount of US dollars from 0", field="cap_usd")
    return float(value)


class EscalationBudget:
    """Reads and sets the cap; sums this month's external spend from the usage rows."""

    def __init__(self, engine: Engine, *, default_cap: float | None) -> None:
        self._engine = engine
        self.default_cap = default_cap

    def cap(self) -> tuple[float | None, str]:
        """The cap in force and where it comes from (`setting` or `admin`)."""
        with session_scope(self._engine) as session:
            return self._cap(session)

    def _cap(self, session: Session) -> tuple[float | None, str]:
        row = session.exec(
            select(BudgetChange).order_by(col(BudgetChange.id).desc()).limit(1)
        ).first()
        if row is None:
            return self.default_cap, "setting"
        return row.cap_usd, "admin"

    def change_sync(self, cap_usd: float | None, *, actor: Actor, audit: AuditLog) -> BudgetStatus:
        """Set the cap (None: no cap) as `actor` and audit `budget.changed` with the old and
        new cap in cents, in one commit; returns the budget's status under the new cap."""
        cap_usd = check_cap(cap_usd)
        with audit.transaction() as tx:
            previous, _ = self._cap(tx.session)
            tx.session.add(BudgetChange(cap_usd=cap_usd, changed_by=actor.id[:200]))
            tx.append(
                BudgetChanged(
                    actor=actor.id,
                    role=actor.role,
                    source=actor.source,
                    target=BUDGET_TARGET,
                    details={"old_cap_cents": _cents(previous), "new_cap_cents": _cents(cap_usd)},
                ).record()
            )
        return self.status()

    async def change(self, cap_usd: float | None, *, actor: Actor, audit: AuditLog) -> BudgetStatus:
        """`change_sync` in a worker thread."""
        return await anyio.to_thread.run_sync(
            lambda: self.change_sync(cap_usd, actor=actor, audit=audit)
        )

    def set_cap(self, cap_usd: float | None, *, actor: str) -> float | None:
        """Set the cap (None: no cap) without an audit event; returns the previous cap.
        Admins change it through `change`, which audits."""
        cap_usd = check_cap(cap_usd)
        previous, _ = self.cap()
        with session_scope(self._engine) as session:
            session.add(BudgetChange(cap_usd=cap_usd, changed_by=actor[:200]))
        return previous

    def spent(self, since: datetime, until: datetime | None = None) -> float:
        """Cost of requests an external tier served in [since, until)."""
        statement: Any = select(func.coalesce(func.sum(UsageRecord.onprem_cost), 0.0)).where(
            UsageRecord.tier == EXTERNAL_TIER, col(UsageRecord.time) >= since
        )
        if until is not None:
            statement = statement.where(col(UsageRecord.time) < until)
        with session_scope(self._engine) as session:
            return float(session.exec(statement).one())

    def status(self, now: datetime | None = None) -> BudgetStatus:
        """The cap, the month's spend and what is left, as of `now`."""
        now = now or datetime.now(UTC)
        cap, source = self.cap()
        start = month_start(now)
        return BudgetStatus(
            month=start.strftime("%Y-%m"),
            cap_usd=cap,
            spent_usd=self.spent(start),
            source=source,
            resets_at=next_month_start(now),
        )


def _cents(value: float | None) -> int | None:
    return None if value is None else round(value * 100)
