"""The monthly cost report fills from real usage rows: real tasks on the real models move the
numbers of the current month, in the REST report and on the admin's dashboard page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser


def current(app: RunningAppliance) -> dict[str, object]:
    body = app.client.get("/api/v1/usage/monthly", params={"months": 3}).json()
    assert [m["month"] for m in body["months"]][-1] == datetime.now(UTC).strftime("%Y-%m")
    assert len(body["months"]) == 3
    month: dict[str, object] = body["months"][-1]
    return month


def test_monthly_report_fills_from_real_tasks(
    appliance: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    before = current(appliance)
    assert before["requests"] == 0 and before["frontier_cost"] == 0

    for text in ("Say hello to the team.", "Thank the nurse for the shift."):
        response = appliance.client.post("/api/v1/tasks/chat", json={"text": text}, timeout=300)
        assert response.status_code == 200, response.text
    classified = appliance.client.post(
        "/api/v1/tasks/classify",
        json={
            "text": "Room 4 at noon.",
            "params": {"labels": ["meeting", "recipe"], "threshold": 0.999},
        },
        timeout=300,
    )
    assert classified.status_code == 200
    escalated = len(classified.json()["receipt"]["route"]["escalations"]) > 0

    after = current(appliance)
    assert after["requests"] == 3
    assert after["escalated"] == (1 if escalated else 0)
    assert after["escalation_rate"] == pytest.approx(after["escalated"] / 3, abs=1e-4)
    onprem, frontier = float(after["onprem_cost"]), float(after["frontier_cost"])  # type: ignore[arg-type]
    assert onprem > 0 and frontier > 0 and after["external_cost"] == 0
    assert after["savings"] == pytest.approx(frontier - onprem, abs=1e-8)
    by_model = after["by_model"]
    assert isinstance(by_model, dict) and "smollm2-135m" in by_model
    assert sum(line["requests"] for line in by_model.values()) == 3
    # The same numbers as the all-time summary (the whole history is this month).
    summary = appliance.client.get("/api/v1/usage/summary").json()["total"]
    assert summary["requests"] == 3
    assert summary["frontier_cost"] == pytest.approx(frontier, abs=1e-7)

    admin = browser_for(appliance, "admin")
    page = admin.client.get("/admin/costs")
    assert page.status_code == 200
    assert 'data-stat="requests">3<' in page.text
    assert f"${frontier:.4f}" in page.text
    assert 'data-chart="chart-monthly"' in page.text and 'data-chart="chart-models"' in page.text
    bad = appliance.client.get("/api/v1/usage/monthly", params={"months": 0})
    assert bad.status_code == 422
