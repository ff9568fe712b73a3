"""The escalation budget with a real external tier: llama-cpp-python's OpenAI-compatible server
on 127.0.0.1 declared `external` and priced, so escalations spend real (test) money from real
usage rows, and past the cap requests stay on-prem or are refused as the policy says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from appliance.costs.models import UsageRecord
from appliance.db.engine import session_scope
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser
from tests.integration.review.conftest import Start, audit_rows, classify
from tests.support.llama_server import LlamaServer

TEXT = "The meeting moved to room 4."


@pytest.fixture
def external_app(
    start_appliance: Start, llama_server: LlamaServer, policies_dir: Path, tmp_path: Path
) -> RunningAppliance:
    config = tmp_path / "inference.toml"
    config.write_text(
        f"""
[[backends]]
name = "frontier"
kind = "openai_compat"
tier = "external"
structured_output = "json_object"
nodes = [{{ url = "{llama_server.base_url}" }}]
models = [{{ name = "frontier-model", served_as = "smollm2-135m", context_length = 2048 }}]
"""
    )
    return start_appliance(
        inference_file=config,
        policies_dir=policies_dir,
        # A dear list price, so one external request costs a visible amount.
        frontier_prices={"frontier-model": (5000.0, 5000.0)},
        review_confidence_threshold=0.0,
    )


def tiers(body: dict[str, Any]) -> list[str]:
    return [e["to"]["tier"] for e in body["receipt"]["route"]["escalations"]]


def external_rows(app: RunningAppliance) -> list[UsageRecord]:
    with session_scope(app.services.engine) as session:
        statement = select(UsageRecord).where(UsageRecord.tier == "external")
        return list(session.exec(statement))


def test_past_the_budget_requests_stay_on_prem_or_are_refused(
    external_app: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    app = external_app
    hard = {"threshold": 0.999}  # no model is that sure: escalates to the top allowed tier
    first = classify(app, TEXT, policy="external-ok", **hard)
    assert first["status"] == 200, first
    assert tiers(first["body"]) == ["large", "external"]
    [row] = external_rows(app)
    assert row.onprem_cost > 0
    budget = app.client.get("/api/v1/usage/budget").json()
    assert budget["cap_usd"] is None and budget["source"] == "setting"
    assert budget["spent_usd"] == pytest.approx(row.onprem_cost, rel=1e-6)

    # An admin sets a cap below what was spent: the budget is exhausted.
    admin = browser_for(app, "admin")
    cap = round(row.onprem_cost / 2, 6)
    response = admin.client.put(
        "/api/v1/usage/budget", json={"cap_usd": cap}, headers={"X-CSRF-Token": admin.csrf}
    )
    assert response.status_code == 200, response.text
    assert response.json()["exhausted"] is True and response.json()["source"] == "admin"
    [changed] = audit_rows(app, "budget.changed")
    assert changed.actor == f"user:{admin.user_id}"
    assert changed.details == {"old_cap_cents": None, "new_cap_cents": round(cap * 100)}

    # stay_on_prem (the default): the escalation stops at the large tier, the receipt says why.
    kept = classify(app, TEXT, policy="external-ok", **hard)
    assert kept["status"] == 200, kept
    assert tiers(kept["body"]) == ["large"]
    assert kept["body"]["receipt"]["route"]["tier"] == "large"
    assert "escalation budget exhausted" in kept["body"]["receipt"]["route"]["reason"]
    assert "escalation_unavailable" in kept["body"]["output"]
    # A request naming the external model directly stays on the box too.
    named = app.client.post(
        "/api/v1/tasks/chat",
        json={"text": "Say hello.", "model": "frontier-model", "policy": "external-ok"},
        timeout=300,
    ).json()
    assert named["receipt"]["route"]["tier"] != "external"
    assert "escalation budget exhausted" in named["receipt"]["route"]["reason"]
    assert len(external_rows(app)) == 1  # nothing more went out

    # refuse: a 429 naming the budget, with the time until it resets; audited, nothing sent.
    refused = classify(app, TEXT, policy="external-refuse", **hard)
    assert refused["status"] == 429, refused
    error = refused["body"]["error"]
    assert error["code"] == "escalation_budget_exhausted"
    assert "escalation budget" in error["message"]
    assert error["budget"]["cap_usd"] == pytest.approx(cap)
    assert int(refused["headers"]["retry-after"]) > 0
    assert audit_rows(app)[-1].action == "external.refused"
    assert len(external_rows(app)) == 1

    # Lifting the cap opens the external tier again.
    lifted = admin.client.put(
        "/api/v1/usage/budget", json={"cap_usd": None}, headers={"X-CSRF-Token": admin.csrf}
    )
    assert lifted.json()["cap_usd"] is None
    again = classify(app, TEXT, policy="external-refuse", **hard)
    assert again["status"] == 200 and tiers(again["body"]) == ["large", "external"]
    assert len(external_rows(app)) == 2


def test_budget_from_the_setting_and_its_api(
    start_appliance: Start, browser_for: Callable[..., Browser]
) -> None:
    app = start_appliance(escalation_budget_usd=0.0)
    budget = app.client.get("/api/v1/usage/budget").json()
    # A cap of 0 forbids all external spend.
    assert budget["cap_usd"] == 0.0 and budget["exhausted"] and budget["source"] == "setting"
    admin = browser_for(app, "admin")
    bad = admin.client.put(
        "/api/v1/usage/budget", json={"cap_usd": -1}, headers={"X-CSRF-Token": admin.csrf}
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cap_usd"
    auditor = browser_for(app, "auditor")
    assert auditor.client.get("/api/v1/usage/budget").status_code == 200
    put = auditor.client.put(
        "/api/v1/usage/budget", json={"cap_usd": 5}, headers={"X-CSRF-Token": auditor.csrf}
    )
    assert put.status_code == 403
    staff = browser_for(app, "staff")
    assert staff.client.get("/api/v1/usage/budget").status_code == 403
    # The admin page's form sets it too (audited), and says what it set.
    form = admin.client.post(
        "/admin/costs/budget",
        data={"cap_usd": "12.50"},
        headers={"X-CSRF-Token": admin.csrf, "HX-Request": "true"},
    )
    assert form.status_code == 200 and "$12.50 a month" in form.text
    assert app.client.get("/api/v1/usage/budget").json()["cap_usd"] == 12.5
    assert [e.details["new_cap_cents"] for e in audit_rows(app, "budget.changed")] == [1250]
