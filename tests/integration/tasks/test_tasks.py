"""`POST /api/v1/tasks/{name}`: all six tasks on the real bundled models, through the real path."""

from __future__ import annotations

from typing import Any

import httpx
from jsonschema import Draft202012Validator
from sqlmodel import Session, select

from appliance.costs.models import UsageRecord
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance

NOTE = (
    "The quarterly review meeting moved to Thursday at 10am in room 4. Please bring the budget "
    "figures and the hiring plan. The team agreed to ship the new search feature in March."
)


def run(app: RunningAppliance, name: str, body: dict[str, Any]) -> httpx.Response:
    return app.client.post(f"/api/v1/tasks/{name}", json=body, timeout=300)


def usage_rows(app: RunningAppliance) -> list[UsageRecord]:
    with Session(app.services.engine) as session:
        return list(session.exec(select(UsageRecord)))


def assert_valid(app: RunningAppliance, name: str, output: dict[str, Any]) -> None:
    schema = app.services.gateway.routing.tasks.get(name).output
    assert list(Draft202012Validator(schema).iter_errors(output)) == []


def test_list_shows_the_templates_with_schemas(appliance: RunningAppliance) -> None:
    response = appliance.client.get("/api/v1/tasks")
    assert response.status_code == 200
    tasks = {t["name"]: t for t in response.json()["tasks"]}
    assert sorted(tasks) == ["ask", "chat", "classify", "extract", "redact", "summarize"]
    assert tasks["extract"]["parameters"]["required"] == ["schema"]
    assert tasks["redact"]["uses_model"] is False


def test_all_six_tasks_run_on_the_real_models(appliance: RunningAppliance) -> None:
    cases: dict[str, dict[str, Any]] = {
        "summarize": {"text": NOTE, "params": {"max_words": 20}},
        "extract": {
            "text": NOTE,
            "params": {
                "schema": {
                    "type": "object",
                    "properties": {"day": {"type": "string"}, "room": {"type": "integer"}},
                    "required": ["day", "room"],
                }
            },
        },
        "classify": {
            "text": NOTE,
            "params": {"labels": ["meeting", "recipe"], "threshold": 0.0},
        },
        "redact": {"text": "Call Jane Doe on 212-555-0199 about the contract."},
        "ask": {"text": NOTE, "params": {"question": "Which room is the meeting in?"}},
        "chat": {"text": "Say hello in three words."},
    }
    for name, body in cases.items():
        response = run(appliance, name, body)
        assert response.status_code == 200, (name, response.text)
        result = response.json()
        assert_valid(appliance, name, result["output"])
        receipt = result["receipt"]
        assert receipt["route"]["tier"] == "small", name
        assert receipt["route"]["reason"] == f"task '{name}' defaults to tier small"
        if name != "redact":
            assert result["usage"]["generations"] >= 1, name
            assert result["usage"]["frontier_cost"] > 0, name
            assert result["usage"]["onprem_cost"] > 0, name

    redacted = run(appliance, "redact", cases["redact"]).json()
    assert "Jane Doe" not in redacted["output"]["text"]
    assert "212-555-0199" not in redacted["output"]["text"]
    assert redacted["receipt"]["entities"]["PHONE_NUMBER"] == 1
    assert redacted["usage"]["generations"] == 0

    classified = run(appliance, "classify", cases["classify"]).json()["output"]
    assert classified["label"] in {"meeting", "recipe"}
    assert 0.0 < classified["confidence"] <= 1.0
    assert abs(sum(classified["scores"].values()) - 1.0) < 0.01

    with Session(appliance.services.engine) as session:
        events = list(session.exec(select(AuditEvent)))
        actions = {e.action for e in events if e.action.startswith("completion")}
    assert len([e for e in events if e.action.startswith("completion")]) == 8
    assert actions <= {"completion.allowed", "completion.redacted"}
    rows = usage_rows(appliance)
    assert len(rows) == 8
    assert all(r.frontier_cost > 0 and r.onprem_cost > 0 for r in rows if r.task != "redact")
    assert all(
        r.frontier_model == "gpt-4o" and r.latency_ms > 0 for r in rows if r.task != "redact"
    )
    assert all(r.model == "smollm2-135m" and r.tier == "small" for r in rows)


def test_summarize_maps_then_reduces_long_documents(appliance: RunningAppliance) -> None:
    document = "\n\n".join([NOTE] * 3)
    response = run(
        appliance, "summarize", {"text": document, "params": {"chunk_tokens": 70, "max_words": 10}}
    )
    assert response.status_code == 200, response.text
    output = response.json()["output"]
    assert output["chunks"] > 1
    assert output["summary"]
    # One generation per chunk plus at least one reduce step.
    assert response.json()["usage"]["generations"] > output["chunks"]


def test_identifiers_never_reach_the_model(appliance: RunningAppliance) -> None:
    text = "Ask john.smith@example.com whether the meeting moved."
    response = run(appliance, "ask", {"text": text, "params": {"question": "Who should I ask?"}})
    assert response.status_code == 200, response.text
    assert "john.smith@example.com" not in appliance.backend.received_text()
    assert "<EMAIL_ADDRESS_1>" in appliance.backend.received_text()


def test_bad_requests_name_the_field(appliance: RunningAppliance) -> None:
    unknown = run(appliance, "translate", {"text": "hi"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "task_not_found"
    missing = run(appliance, "classify", {"text": "hi"})
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "params"
    both = run(appliance, "chat", {"text": "hi", "document_id": "d1"})
    assert both.status_code == 422
    bad_schema = run(appliance, "extract", {"text": "hi", "params": {"schema": {"type": "array"}}})
    assert bad_schema.status_code == 422
    assert bad_schema.json()["error"]["field"] == "params.schema"
    assert appliance.backend.requests == []


def test_large_tier_by_task_serves_on_the_second_bundled_model(
    start_appliance: Any,
) -> None:
    app: RunningAppliance = start_appliance(task_tiers={"ask": "large"})
    response = run(app, "ask", {"text": NOTE, "params": {"question": "When is the meeting?"}})
    assert response.status_code == 200, response.text
    route = response.json()["receipt"]["route"]
    assert (route["tier"], route["model"]) == ("large", "gemma3-270m")
    assert route["reason"] == "task 'ask' defaults to tier large"
    assert app.backend.requests[-1].model == "gemma3-270m"
    assert usage_rows(app)[-1].model == "gemma3-270m"


def test_usage_summary_reports_both_costs(appliance: RunningAppliance) -> None:
    run(appliance, "chat", {"text": "Name a fruit."})
    appliance.client.post(
        "/api/v1/chat", json={"messages": [{"role": "user", "content": "Name a tree."}]}
    )
    response = appliance.client.get("/api/v1/usage/summary")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"]["requests"] == 2
    assert body["total"]["onprem_cost"] > 0
    assert body["total"]["frontier_cost"] > body["total"]["onprem_cost"]
    assert body["by_task"]["chat"]["requests"] == 2
    assert body["by_model"]["smollm2-135m"]["prompt_tokens"] > 0
    assert body["frontier_model"] == "gpt-4o"
    bad = appliance.client.get("/api/v1/usage/summary", params={"since": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "since"
