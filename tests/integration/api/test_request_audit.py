"""Every request through the gateway writes one audit row, with or without a model, and so
does every refusal of the REST API and the OpenAI- and Ollama-compatible endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.audit.verify import verify
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.api.test_chat import audit_rows
from tests.integration.api.test_fail_closed import BrokenDetector
from tests.integration.auth.conftest import PASSWORD, csrf_from, make_user, password_login

TEXT = "Write to jane.doe@example.org or call 212-555-0199 about Jane Doe."
VALUES = ("jane.doe@example.org", "212-555-0199", "Jane Doe")


def _new_rows(app: RunningAppliance, before: int) -> list[AuditEvent]:
    return audit_rows(app)[before:]


def _no_text(row: AuditEvent) -> None:
    dumped = repr(row.model_dump())
    for value in VALUES:
        assert value not in dumped


def test_analyze_writes_one_row_with_counts_only(appliance: RunningAppliance) -> None:
    response = appliance.client.post("/api/v1/pii/analyze", json={"text": TEXT}, timeout=60)

    assert response.status_code == 200, response.text
    found = {e["type"] for e in response.json()["entities"]}
    [row] = _new_rows(appliance, 0)
    assert row.action == "pii.analyzed"
    assert row.status_code == 200
    assert row.id == response.json()["audit_id"]
    assert row.policy is not None and row.policy.startswith("default@")
    assert set(row.entity_counts) == found
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER"} <= found
    assert row.model is None
    _no_text(row)
    assert appliance.backend.requests == []


def test_redact_writes_one_row_allowed_or_refused(appliance: RunningAppliance) -> None:
    redacted = appliance.client.post(
        "/api/v1/pii/redact", json={"text": TEXT, "policy": "hr"}, timeout=60
    )
    assert redacted.status_code == 200, redacted.text
    [row] = _new_rows(appliance, 0)
    assert (row.action, row.outcome, row.status_code) == ("pii.redacted", "redacted", 200)
    assert row.id == redacted.json()["receipt"]["audit_id"]
    assert row.entity_counts == redacted.json()["receipt"]["entities"]
    _no_text(row)

    # A `block` finding: the policy's decision, one row (not a second one from the refusal hook).
    blocked = appliance.client.post(
        "/api/v1/pii/redact", json={"text": TEXT, "policy": "strict"}, timeout=60
    )
    assert blocked.status_code == 422, blocked.text
    [row] = _new_rows(appliance, 1)
    assert (row.action, row.outcome, row.status_code) == ("pii.redacted", "blocked", 422)
    assert blocked.json()["error"]["receipt"]["audit_id"] == row.id
    _no_text(row)

    nothing = appliance.client.post(
        "/api/v1/pii/redact", json={"text": "The sky is blue."}, timeout=60
    )
    assert nothing.status_code == 200, nothing.text
    [row] = _new_rows(appliance, 2)
    assert (row.action, row.outcome, row.entity_counts) == ("pii.redacted", "allowed", {})

    unknown = appliance.client.post(
        "/api/v1/pii/redact", json={"text": TEXT, "policy": "nope"}, timeout=60
    )
    assert unknown.status_code == 404, unknown.text
    [row] = _new_rows(appliance, 3)
    assert (row.action, row.outcome, row.status_code) == ("pii.redacted", "policy_not_found", 404)

    report = verify(appliance.services.engine, key=None)
    assert report.ok, report.summary()


CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "status", "action"),
    [
        ("/v1/chat/completions", {"model": "smollm2-135m"}, 422, "completion.rejected"),
        ("/v1/chat/completions", CHAT | {"temperature": 9}, 422, "completion.rejected"),
        ("/v1/embeddings", {"model": "smollm2-135m"}, 422, "request.refused"),
        ("/ollama/api/chat", {"model": "smollm2-135m"}, 422, "completion.rejected"),
        ("/ollama/api/generate", {"prompt": "Hi"}, 422, "completion.rejected"),
        ("/ollama/api/embed", {"model": "smollm2-135m"}, 422, "request.refused"),
        ("/ollama/api/show", {}, 422, "request.refused"),
    ],
)
def test_a_refusal_of_a_compatible_endpoint_writes_one_row(
    appliance: RunningAppliance, path: str, body: dict[str, Any], status: int, action: str
) -> None:
    response = appliance.client.post(path, json=body, timeout=60)

    assert response.status_code == status, response.text
    [row] = audit_rows(appliance)
    assert (row.action, row.status_code) == (action, status)
    assert appliance.backend.requests == []


def test_a_malformed_body_on_a_compatible_endpoint_writes_one_row(
    appliance: RunningAppliance,
) -> None:
    for path in ("/v1/chat/completions", "/ollama/api/chat"):
        response = appliance.client.post(
            path, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text
    rows = audit_rows(appliance)
    assert [(r.action, r.status_code) for r in rows] == [
        ("completion.rejected", response.status_code)
    ] * 2


@pytest.mark.parametrize("route", ["analyze", "redact", "preview"])
def test_a_failed_analysis_without_a_model_writes_one_row(
    appliance: RunningAppliance, route: str
) -> None:
    appliance.services.detector.set_ready(BrokenDetector())  # type: ignore[arg-type]

    if route == "preview":
        # The workspace preview: a browser session, not under the API's refusal hook.
        make_user(appliance, "staff-preview", "staff")
        client, signed_in = password_login(appliance.url, "staff-preview", PASSWORD)
        assert signed_in.status_code == 303, signed_in.text
        csrf = csrf_from(client.get("/account/password").text)
        before = len(audit_rows(appliance))  # the sign-in's own requests have their rows
        response = client.post(
            "/workspace/preview", data={"text": TEXT}, headers={"X-CSRF-Token": csrf}
        )
        client.close()
    else:
        before = 0
        response = appliance.client.post(f"/api/v1/pii/{route}", json={"text": TEXT}, timeout=60)

    assert response.status_code == 503, response.text
    rows = audit_rows(appliance)[before:]
    assert [(r.action, r.outcome, r.status_code) for r in rows] == [
        ("pii.detector_failed", "detector_unavailable", 503)
    ]


def test_pii_requests_count_in_usage_by_task_not_under_a_model(appliance: RunningAppliance) -> None:
    assert appliance.client.post("/api/v1/pii/analyze", json={"text": TEXT}).status_code == 200
    for _ in range(2):
        assert appliance.client.post("/api/v1/pii/redact", json={"text": TEXT}).status_code == 200
    refused = appliance.client.post("/api/v1/pii/redact", json={"text": TEXT, "policy": "nope"})
    assert refused.status_code in (403, 404)

    body = appliance.client.get("/api/v1/usage/summary").json()
    assert body["total"]["requests"] == 3
    assert body["by_task"]["pii.analyze"]["requests"] == 1
    assert body["by_task"]["pii.redact"]["requests"] == 2
    assert body["by_task"]["pii.redact"]["prompt_tokens"] == 0
    assert body["by_task"]["pii.redact"]["avg_latency_ms"] > 0
    assert body["by_model"] == {} and body["by_tier"] == {}
    monthly = appliance.client.get("/api/v1/usage/monthly")
    assert monthly.status_code == 200, monthly.text
    assert all(month["by_model"] == {} for month in monthly.json()["months"])
