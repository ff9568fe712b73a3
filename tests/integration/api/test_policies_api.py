"""The policy console's REST API: versions, diff, activation, rollback, assignment, audit."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance

POLICIES = Path(__file__).resolve().parents[3] / "policies"


def _actions(app: RunningAppliance) -> list[str]:
    with Session(app.services.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent))]


def test_admin_edits_activates_and_rolls_back_a_policy(appliance: RunningAppliance) -> None:
    client = appliance.client
    listing = client.get("/api/v1/policies").json()["policies"]
    assert {p["name"] for p in listing} == {"default", "hr", "legal", "medical", "strict"}
    original = client.get("/api/v1/policies/hr").json()
    assert original["versions"][0]["active"] and original["source"].startswith("# HR")

    edited = (POLICIES / "hr.yaml").read_text().replace("action: mask", "action: redact")
    created = client.post(
        "/api/v1/policies/hr/versions", json={"source": edited, "comment": "redact phones"}
    )
    assert created.status_code == 201, created.text
    number = created.json()["number"]
    assert created.json()["active"] is False

    diff = client.get(f"/api/v1/policies/hr/diff?a=1&b={number}").json()["diff"]
    assert "-  - {entity: PHONE_NUMBER, action: mask}" in diff
    assert "+  - {entity: PHONE_NUMBER, action: redact}" in diff

    assert client.post("/api/v1/policies/hr/activate", json={"version": str(number)}).is_success
    text = "Call 212-555-0199."
    redacted = client.post("/api/v1/pii/redact", json={"text": text, "policy": "hr"}).json()
    assert "<PHONE_NUMBER_1>" in redacted["text"]

    back = client.post("/api/v1/policies/hr/rollback")
    assert back.json()["version"] == original["version"]
    masked = client.post("/api/v1/pii/redact", json={"text": text, "policy": "hr"}).json()
    assert "***-***-0199" in masked["text"]

    actions = _actions(appliance)
    assert actions.count("policy.created") == 1
    assert actions.count("policy.activated") == 1
    assert actions.count("policy.rolled_back") == 1


def test_invalid_yaml_is_refused_naming_line_and_field(appliance: RunningAppliance) -> None:
    bad = "name: hr\nentities:\n  - {entity: PERSON, action: shred}\n"
    response = appliance.client.post("/api/v1/policies/hr/versions", json={"source": bad})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "entities.0.action"
    assert ":3:" in error["message"]
    assert appliance.client.post("/api/v1/policies/nope/rollback").status_code == 404


def test_assignment_changes_the_policy_a_key_runs_under(appliance: RunningAppliance) -> None:
    body = {"messages": [{"role": "user", "content": "Mail bob@example.com."}], "max_tokens": 2}
    first = appliance.client.post("/api/v1/chat", json=body)
    assert first.json()["receipt"]["policy"]["name"] == "default"
    with Session(appliance.services.engine) as session:
        actor = (
            session.exec(
                select(AuditEvent).where(AuditEvent.id == first.json()["receipt"]["audit_id"])
            )
            .one()
            .actor
        )
    assert actor.startswith("apikey:")

    assigned = appliance.client.put(
        "/api/v1/policies/assignments",
        json={"kind": "key", "target": actor.removeprefix("apikey:"), "policy": "strict"},
    )
    assert assigned.is_success, assigned.text
    with Session(appliance.services.engine) as session:
        [event] = session.exec(select(AuditEvent).where(AuditEvent.action == "policy.assigned"))
    assert event.target == actor and event.policy == appliance.services.policies.get("strict").ref
    assert event.details == {"kind": "key", "assigned_to": actor.removeprefix("apikey:")}
    blocked = appliance.client.post("/api/v1/chat", json=body)
    assert blocked.status_code == 422
    assert blocked.json()["error"]["receipt"]["policy"]["name"] == "strict"

    appliance.client.put(
        "/api/v1/policies/assignments",
        json={"kind": "key", "target": actor.removeprefix("apikey:"), "policy": None},
    )
    assert appliance.client.post("/api/v1/chat", json=body).status_code == 200
    assert "policy.unassigned" in _actions(appliance)
