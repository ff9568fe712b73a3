"""Each escalation trigger, on the real models: the escalation and its reason are in the receipt.

The bundled models are tiered small (SmolLM2 135M) and large (Gemma 3 270M) by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance

NOTE = (
    "The quarterly review meeting moved to Thursday at 10am in room 4. Please bring the budget "
    "figures and the hiring plan. The team agreed to ship the new search feature in March."
)
# Constrained decoding yields valid JSON, but no grammar enforces `multipleOf`: both models
# answer 42, so validation fails on every attempt, on every tier.
UNSATISFIABLE = {
    "type": "object",
    "properties": {"code": {"type": "integer", "minimum": 1, "multipleOf": 1000003}},
    "required": ["code"],
}

Start = Callable[..., RunningAppliance]


def run(app: RunningAppliance, name: str, body: dict[str, Any]) -> httpx.Response:
    return app.client.post(f"/api/v1/tasks/{name}", json=body, timeout=300)


def last_audit(app: RunningAppliance) -> AuditEvent:
    with Session(app.services.engine) as session:
        rows = list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)))  # type: ignore[arg-type]
    return [r for r in rows if r.action.startswith(("completion", "external"))][-1]


def test_low_confidence_escalates(appliance: RunningAppliance) -> None:
    body = {"text": NOTE, "params": {"labels": ["meeting", "recipe"], "threshold": 0.999}}
    response = run(appliance, "classify", body)

    assert response.status_code == 200, response.text
    route = response.json()["receipt"]["route"]
    first = route["escalations"][0]
    assert first["from"] == {"model": "smollm2-135m", "tier": "small"}
    assert first["to"] == {"model": "gemma3-270m", "tier": "large"}
    assert "below threshold 1.00" in first["reason"] or "below threshold" in first["reason"]
    assert [r.model for r in appliance.backend.requests] == ["smollm2-135m", "gemma3-270m"]
    output = response.json()["output"]
    # Gemma is not sure enough either and there is no tier above: the best answer, flagged.
    assert output["label"] in {"meeting", "recipe"}
    assert "escalation_unavailable" in output
    audit = last_audit(appliance)
    assert audit.tier == "large"
    assert audit.details["escalations"] == 1
    assert "below threshold" in audit.details["escalation_reason"]


def test_low_confidence_trigger_can_be_switched_off(start_appliance: Start) -> None:
    app = start_appliance(escalate_on_low_confidence=False)
    body = {"text": NOTE, "params": {"labels": ["meeting", "recipe"], "threshold": 0.999}}
    response = run(app, "classify", body)
    assert response.status_code == 200, response.text
    assert response.json()["receipt"]["route"]["escalations"] == []
    assert [r.model for r in app.backend.requests] == ["smollm2-135m"]


def test_schema_failure_after_retries_escalates(appliance: RunningAppliance) -> None:
    response = run(
        appliance, "extract", {"text": "The code is 42.", "params": {"schema": UNSATISFIABLE}}
    )

    # Both tiers fail validation: 502, and the receipt shows the escalation and why.
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "output_invalid"
    escalation = error["receipt"]["route"]["escalations"][0]
    assert escalation["reason"] == (
        "output failed schema validation after 2 attempts on smollm2-135m"
    )
    assert escalation["to"]["model"] == "gemma3-270m"
    # One try plus `schema_retries` (1) on each tier.
    assert [r.model for r in appliance.backend.requests] == [
        "smollm2-135m", "smollm2-135m", "gemma3-270m", "gemma3-270m",
    ]  # fmt: skip


def test_schema_retries_are_tunable_and_the_trigger_can_be_off(start_appliance: Start) -> None:
    app = start_appliance(escalate_on_schema_failure=False, schema_retries=0)
    response = run(app, "extract", {"text": "The code is 42.", "params": {"schema": UNSATISFIABLE}})
    assert response.status_code == 502
    assert response.json()["error"]["receipt"]["route"]["escalations"] == []
    assert [r.model for r in app.backend.requests] == ["smollm2-135m"]


def test_input_too_long_for_the_small_model_escalates(start_appliance: Start) -> None:
    app = start_appliance(model_context_limits={"smollm2-135m": 300})
    text = " ".join([NOTE] * 6)
    response = run(app, "ask", {"text": text, "params": {"question": "Which room?"}})

    assert response.status_code == 200, response.text
    route = response.json()["receipt"]["route"]
    assert (route["tier"], route["model"]) == ("large", "gemma3-270m")
    assert "does not fit the 300-token context of smollm2-135m" in route["escalations"][0]["reason"]
    assert [r.model for r in app.backend.requests] == ["gemma3-270m"]

    # The chat endpoint takes the same path.
    chat = app.client.post(
        "/api/v1/chat", json={"messages": [{"role": "user", "content": text}]}, timeout=300
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["receipt"]["route"]["escalations"][0]["to"]["model"] == "gemma3-270m"


def test_summaries_chunk_before_they_escalate(start_appliance: Start) -> None:
    app = start_appliance(model_context_limits={"smollm2-135m": 400}, max_chunks=2)
    short = run(app, "summarize", {"text": "\n\n".join([NOTE] * 5), "params": {"max_words": 10}})
    assert short.status_code == 200, short.text
    assert short.json()["receipt"]["route"]["escalations"] == []
    assert short.json()["output"]["chunks"] == 2

    long = run(app, "summarize", {"text": "\n\n".join([NOTE] * 12), "params": {"max_words": 10}})
    assert long.status_code == 200, long.text
    escalation = long.json()["receipt"]["route"]["escalations"][0]
    assert "more than max_chunks=2" in escalation["reason"]
    assert escalation["to"]["tier"] == "large"


def test_router_model_verdict_escalates(start_appliance: Start) -> None:
    # Threshold 0: any probability of "complex" is enough, so the verdict is always complex.
    app = start_appliance(router_model_enabled=True, router_complex_threshold=0.0)
    response = app.client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    route = response.json()["receipt"]["route"]
    assert route["verdict"]["label"] == "complex"
    assert route["escalations"][0]["reason"].startswith("router model verdict complex")
    assert route["model"] == "gemma3-270m"
    # The verdict was scored on the router model, then the answer came from the large tier.
    assert [r.model for r in app.backend.requests] == ["smollm2-135m", "gemma3-270m"]


def test_router_model_simple_verdict_stays_small(start_appliance: Start) -> None:
    app = start_appliance(router_model_enabled=True, router_complex_threshold=1.0)
    response = app.client.post(
        "/api/v1/chat", json={"messages": [{"role": "user", "content": "Say hi."}]}, timeout=300
    )
    assert response.status_code == 200, response.text
    route = response.json()["receipt"]["route"]
    assert route["verdict"]["label"] == "simple"
    assert route["escalations"] == []
    assert route["model"] == "smollm2-135m"
