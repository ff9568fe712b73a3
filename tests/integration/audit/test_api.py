"""`/api/v1/audit` on the running app: the chat path's typed events, verify, export, keys."""

from __future__ import annotations

import csv
import io
import json

import httpx
from sqlalchemy import update

from appliance.audit.checkpoints import Checkpoint
from appliance.audit.keys import VerifyKey
from appliance.audit.store import EVENTS_TABLE
from appliance.auth.identity import Caller
from tests.conftest import RunningAppliance
from tests.unit.audit.conftest import drop_guards

NAME, EMAIL = "John Smith", "john.smith@example.com"
PERSONAL = f"Write one line to {NAME} ({EMAIL})."


def chat(app: RunningAppliance, content: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return app.client.post("/api/v1/chat", json=body)


def test_a_chat_request_becomes_a_typed_event_with_counts_and_no_text(
    appliance: RunningAppliance,
) -> None:
    response = chat(appliance, PERSONAL)
    assert response.status_code == 200, response.text
    receipt = response.json()["receipt"]

    listed = appliance.client.get("/api/v1/audit/events", params={"action": "completion.*"})

    assert listed.status_code == 200, listed.text
    (event,) = listed.json()["events"]
    assert event["id"] == receipt["audit_id"]
    assert event["action"] == "completion.redacted"
    assert event["request_id"] == response.headers["X-Request-Id"]
    assert event["entity_counts"] == receipt["entities"]
    assert event["status_code"] == 200 and event["model"] == receipt["model"]
    exported = appliance.client.get("/api/v1/audit/export").text
    assert NAME not in exported and EMAIL not in exported
    assert response.json()["message"]["content"].strip() not in exported


def test_verify_reports_ok_then_the_first_bad_event_after_tampering(
    appliance: RunningAppliance,
) -> None:
    for _ in range(2):
        assert chat(appliance, "Say hello.").status_code == 200

    report = appliance.client.get("/api/v1/audit/verify").json()
    assert report["ok"] is True and report["bad_seq"] is None
    engine = appliance.services.engine
    drop_guards(engine)
    with engine.begin() as connection:
        target = report["last_seq"]
        connection.execute(
            update(EVENTS_TABLE).where(EVENTS_TABLE.c.seq == target).values(outcome="allowed!")
        )

    tampered = appliance.client.get("/api/v1/audit/verify").json()

    assert tampered["ok"] is False
    assert tampered["bad_seq"] == target
    assert "altered" in tampered["reason"]
    recorded = appliance.client.get(
        "/api/v1/audit/events", params={"action": "audit.verified", "limit": 1}
    ).json()["events"][0]
    assert recorded["outcome"] == "failed" and recorded["details"]["bad_seq"] == target


def test_export_is_csv_or_jsonl_filtered_and_itself_audited(appliance: RunningAppliance) -> None:
    assert chat(appliance, "Say hello.").status_code == 200

    first = appliance.client.get(
        "/api/v1/audit/export", params={"format": "csv", "action": "completion.*"}
    )
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(first.text)))
    assert [r["action"] for r in rows] == ["completion.allowed"]

    second = appliance.client.get("/api/v1/audit/export", params={"action": "audit.exported"})
    lines = [json.loads(line) for line in second.text.splitlines()]
    assert [e["id"] for e in lines] == [first.headers["X-Audit-Event-Id"]]
    assert lines[0]["details"]["format"] == "csv"
    assert lines[0]["details"]["action"] == "completion.*"


def test_bad_export_parameters_name_the_field(appliance: RunningAppliance) -> None:
    for params, field in (
        ({"action": "auth.logni"}, "action"),
        ({"format": "xml"}, "format"),
        ({"since": "yesterday"}, "since"),
    ):
        response = appliance.client.get("/api/v1/audit/export", params=params)
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"]["field"] == field


def test_the_public_key_verifies_the_stored_checkpoints(appliance: RunningAppliance) -> None:
    appliance.services.audit.checkpoint_now_sync()

    key = appliance.client.get("/api/v1/audit/public-key").json()
    stored = appliance.client.get("/api/v1/audit/checkpoints").json()["checkpoints"]

    verify_key = VerifyKey.from_pem(key["pem"])
    assert key["algorithm"] == "Ed25519" and key["key_id"] == verify_key.key_id
    assert stored and all(Checkpoint.from_dict(c).verify(verify_key) for c in stored)


def test_audit_routes_need_the_auditor_role_or_the_audit_scope(
    appliance: RunningAppliance,
) -> None:
    anonymous = httpx.get(f"{appliance.url}/api/v1/audit/verify", timeout=30)
    _, chat_only = appliance.server.app.state.identity.create_key_sync(
        name="chat-only",
        scopes=["chat"],
        policy=None,
        expires_days=None,
        owner_id=None,
        actor="test",
        caller=Caller(source="test"),
    )
    wrong_scope = httpx.get(
        f"{appliance.url}/api/v1/audit/export",
        headers={"Authorization": f"Bearer {chat_only}"},
        timeout=30,
    )

    assert anonymous.status_code == 401
    assert wrong_scope.status_code == 403
