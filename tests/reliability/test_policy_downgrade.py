"""A caller cannot pick a weaker policy than its assignment: the assignment (key, team, task)
is a floor; naming another policy is 403 `policy_not_allowed`, audited, and nothing reaches a
model, unless the admin allowed that policy with the assignment. Issue 17, defect 2."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlmodel import Session, select

from appliance.auth import apikeys
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance

TEXT = "Mary Jones wrote to mary.jones@example.org about the contract."


def _key_id(app: RunningAppliance) -> str:
    return next(k.id for k in apikeys.list_keys(app.services.engine) if k.name == "test-suite")


def _assign(app: RunningAppliance, policy: str | None, **extra: Any) -> None:
    response = app.client.put(
        "/api/v1/policies/assignments",
        json={"kind": "key", "target": _key_id(app), "policy": policy, **extra},
    )
    assert response.is_success, response.text


def _refusals(app: RunningAppliance) -> list[AuditEvent]:
    with Session(app.services.engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.action == "policy.not_allowed"))
        )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/tasks/summarize", {"text": TEXT, "policy": "default"}),
        ("/api/v1/pii/redact", {"text": TEXT, "policy": "default"}),
        ("/api/v1/pii/analyze", {"text": TEXT, "policy": "default"}),
    ],
)
def test_naming_a_weaker_policy_than_the_assignment_is_refused(
    appliance: RunningAppliance, path: str, body: dict[str, Any]
) -> None:
    _assign(appliance, "strict")

    response = appliance.client.post(path, json=body, timeout=60)

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "policy_not_allowed"
    assert response.json()["error"]["field"] == "policy"
    assert appliance.backend.requests == []
    refused = _refusals(appliance)
    assert len(refused) == 1
    assert refused[0].status_code == 403
    assert "Mary" not in repr(refused[0].model_dump())


def test_a_batch_naming_a_weaker_policy_is_refused(appliance: RunningAppliance) -> None:
    _assign(appliance, "strict")

    response = appliance.client.post(
        "/api/v1/batches",
        files={"file": ("items.jsonl", f'{{"text": "{TEXT}"}}\n'.encode())},
        data={"task": "summarize", "policy": "default"},
        timeout=60,
    )

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "policy_not_allowed"
    assert len(_refusals(appliance)) == 1
    time.sleep(1)
    assert appliance.backend.requests == []


def test_the_assigned_policy_and_allowed_ones_may_be_named(appliance: RunningAppliance) -> None:
    _assign(appliance, "strict")
    same = appliance.client.post(
        "/api/v1/pii/redact", json={"text": "The sky is blue.", "policy": "strict"}
    )
    assert same.status_code == 200, same.text
    assert same.json()["receipt"]["policy"]["name"] == "strict"

    _assign(appliance, "strict", allowed=["legal"])
    allowed = appliance.client.post("/api/v1/pii/redact", json={"text": TEXT, "policy": "legal"})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["receipt"]["policy"]["name"] == "legal"
    still = appliance.client.post("/api/v1/pii/redact", json={"text": TEXT, "policy": "default"})
    assert still.status_code == 403


def test_without_an_assignment_the_setting_decides(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(requestable_policies=["strict"])
    stronger = app.client.post("/api/v1/pii/redact", json={"text": "Hi.", "policy": "strict"})
    weaker = app.client.post("/api/v1/pii/redact", json={"text": "Hi.", "policy": "hr"})
    unknown = app.client.post("/api/v1/pii/redact", json={"text": "Hi.", "policy": "nope"})

    assert stronger.status_code == 200, stronger.text
    assert weaker.status_code == 403
    assert unknown.status_code == 404
