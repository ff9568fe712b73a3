"""The escalation budget and the monthly report on SQLite and PostgreSQL: calendar months in
UTC, spend from external usage rows only, the cap's history, and the policy rule past it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import col, select

from appliance.audit.store import AuditLog
from appliance.auth.actor import Actor
from appliance.costs.budget import BudgetChange, EscalationBudget, month_start, next_month_start
from appliance.costs.models import UsageRecord
from appliance.costs.monthly import monthly_report, shift_months
from appliance.costs.store import UsageLog
from appliance.db.engine import make_engine, session_scope, upgrade
from appliance.db.models import AuditEvent
from appliance.errors import InvalidInput
from appliance.policies.schema import RoutingRules

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def usage(
    engine: Engine, when: datetime, *, tier: str = "small", cost: float = 0.01, **extra: object
) -> None:
    UsageLog(engine).append_sync(
        UsageRecord(
            time=when,
            actor="user:x",
            task="classify",
            model=str(extra.get("model", "frontier" if tier == "external" else "smollm2-135m")),
            tier=tier,
            onprem_cost=cost,
            frontier_cost=float(extra.get("frontier", 0.05)),  # type: ignore[arg-type]
            escalations=int(extra.get("escalations", 0)),  # type: ignore[call-overload]
        )
    )


def test_calendar_months_in_utc() -> None:
    assert month_start(NOW) == datetime(2026, 3, 1, tzinfo=UTC)
    assert next_month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert shift_months(datetime(2026, 1, 1, tzinfo=UTC), -1) == datetime(2025, 12, 1, tzinfo=UTC)
    assert shift_months(datetime(2026, 11, 1, tzinfo=UTC), 2) == datetime(2027, 1, 1, tzinfo=UTC)


def test_spend_counts_external_rows_of_this_month_only(engine: Engine) -> None:
    budget = EscalationBudget(engine, default_cap=1.0)
    usage(engine, NOW - timedelta(days=1), tier="external", cost=0.4)
    usage(engine, NOW - timedelta(days=1), tier="large", cost=5.0)  # on-prem: not spend
    usage(engine, datetime(2026, 2, 28, 23, 59, tzinfo=UTC), tier="external", cost=9.0)
    status = budget.status(NOW)
    assert status.month == "2026-03" and status.source == "setting"
    assert status.spent_usd == pytest.approx(0.4)
    assert status.remaining_usd == pytest.approx(0.6) and not status.exhausted
    usage(engine, NOW, tier="external", cost=0.6)
    assert budget.status(NOW).exhausted and budget.status(NOW).remaining_usd == 0.0
    assert budget.status(datetime(2026, 4, 1, tzinfo=UTC)).spent_usd == 0.0  # a new month


def test_the_newest_admin_setting_wins_and_none_lifts_the_cap(engine: Engine) -> None:
    budget = EscalationBudget(engine, default_cap=None)
    assert budget.cap() == (None, "setting")
    assert not budget.status(NOW).exhausted and budget.status(NOW).remaining_usd is None
    assert budget.set_cap(0.0, actor="user:a") is None
    assert budget.cap() == (0.0, "admin")
    assert budget.status(NOW).exhausted  # a cap of 0 forbids any external spend
    assert budget.set_cap(None, actor="user:a") == 0.0
    assert budget.cap() == (None, "admin")
    for bad in (-1.0, float("nan"), 1e12):
        with pytest.raises(InvalidInput):
            budget.set_cap(bad, actor="user:a")


def test_a_change_and_its_audit_event_commit_together(engine: Engine) -> None:
    budget = EscalationBudget(engine, default_cap=5.0)
    audit = AuditLog(engine)
    admin = Actor(id="user:a", role="admin", source="10.0.0.7")
    status = budget.change_sync(12.5, actor=admin, audit=audit)
    assert status.cap_usd == 12.5 and status.source == "admin"
    budget.change_sync(None, actor=admin, audit=audit)
    with pytest.raises(InvalidInput):
        budget.change_sync(-1.0, actor=admin, audit=audit)
    with session_scope(engine) as session:
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all()
        changes = session.exec(select(BudgetChange)).all()
    assert [(r.action, r.actor, r.role, r.source, r.target, r.details) for r in rows] == [
        (
            "budget.changed",
            "user:a",
            "admin",
            "10.0.0.7",
            "escalation_budget",
            {"old_cap_cents": 500, "new_cap_cents": 1250},
        ),
        (
            "budget.changed",
            "user:a",
            "admin",
            "10.0.0.7",
            "escalation_budget",
            {"old_cap_cents": 1250, "new_cap_cents": None},
        ),
    ]
    assert [c.cap_usd for c in changes] == [12.5, None]  # the refused cap stored nothing


def test_monthly_report_per_month_and_model(engine: Engine) -> None:
    usage(engine, NOW, cost=0.01, frontier=0.05)
    usage(engine, NOW, cost=0.02, frontier=0.05, escalations=1, model="gemma3-270m")
    usage(engine, NOW, tier="external", cost=0.03, frontier=0.05, escalations=2)
    usage(engine, datetime(2026, 1, 10, tzinfo=UTC), cost=0.5, frontier=1.0)
    usage(engine, datetime(2025, 6, 10, tzinfo=UTC), cost=7.0)  # before the window
    reports = monthly_report(engine, months=3, now=NOW)
    assert [r.month for r in reports] == ["2026-01", "2026-02", "2026-03"]
    jan, feb, mar = (r.to_dict() for r in reports)
    assert jan["requests"] == 1 and jan["savings"] == pytest.approx(0.5)
    assert feb["requests"] == 0 and feb["escalation_rate"] == 0
    assert mar["requests"] == 3 and mar["escalated"] == 2
    assert mar["escalation_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert mar["onprem_cost"] == pytest.approx(0.03)
    assert mar["external_cost"] == pytest.approx(0.03)
    assert mar["frontier_cost"] == pytest.approx(0.15)
    assert mar["savings"] == pytest.approx(0.15 - 0.06)
    assert set(mar["by_model"]) == {"smollm2-135m", "gemma3-270m", "frontier"}
    assert mar["by_model"]["frontier"]["external_requests"] == 1
    with pytest.raises(InvalidInput):
        monthly_report(engine, months=0)


def test_policy_rule_past_the_budget_is_strict() -> None:
    assert RoutingRules().over_budget == "stay_on_prem"
    assert RoutingRules(over_budget="refuse").over_budget == "refuse"
    with pytest.raises(ValidationError):
        RoutingRules(over_budget="spend_anyway")  # type: ignore[arg-type]
