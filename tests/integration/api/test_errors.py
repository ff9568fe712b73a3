"""Bad input gets a clear error naming the field, and is audited; nothing reaches a model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningAppliance
from tests.integration.api.test_chat import audit_rows


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "policy": "none"}, "policy"),
    ],
)
def test_invalid_body_is_422_naming_the_field(
    appliance: RunningAppliance, body: dict[str, Any], field: str
) -> None:
    response = appliance.client.post("/api/v1/chat", json=body, timeout=30)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert field in error["message"]
    assert appliance.backend.requests == []
    rows = audit_rows(appliance)
    assert [(r.outcome, r.status_code) for r in rows] == [("invalid_input", 422)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "hi"}], "policy": "\x00"}, "policy"),
    ],
)
def test_text_with_a_nul_character_is_422_naming_the_field(
    appliance: RunningAppliance, body: dict[str, Any], field: str
) -> None:
    response = appliance.client.post("/api/v1/chat", json=body, timeout=30)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert "NUL" in response.json()["error"]["message"]
    assert appliance.backend.requests == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/policies/base%00", "name"),
        ("/api/v1/audit/events?actor=a%00b", "actor"),
        ("/api/v1/audit/events?x%00=1", "x\x00"),
    ],
)
def test_a_nul_in_the_path_or_query_is_422_naming_the_parameter(
    appliance: RunningAppliance, path: str, field: str
) -> None:
    response = appliance.client.get(path, timeout=30)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}', "messages.0.content"),
        (b'{"x": "\\u0000", "y": ' + b"[" * 100_000, "body"),
    ],
)
def test_a_nul_is_found_whatever_the_declared_content_type(
    appliance: RunningAppliance, content: bytes, field: str
) -> None:
    response = appliance.client.post(
        "/api/v1/chat", content=content, headers={"content-type": "text/plain"}, timeout=30
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert appliance.backend.requests == []


def test_a_nul_in_a_multipart_text_field_is_422_naming_it(appliance: RunningAppliance) -> None:
    response = appliance.client.post(
        "/api/v1/eval/sets",
        files={"file": ("hr.jsonl", b'{"input": "a", "expected": "b"}\n')},
        data={"name": "hr", "task": "classify", "description": "a\x00b"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "description"


def test_malformed_json_is_400(appliance: RunningAppliance) -> None:
    response = appliance.client.post(
        "/api/v1/chat",
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"
    assert response.json()["error"]["code"] == "malformed_body"


def test_body_over_the_limit_is_413(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(max_body_bytes=2_000)
    big = {"messages": [{"role": "user", "content": "x" * 5_000}]}

    response = app.client.post("/api/v1/chat", json=big, timeout=30)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "max_body_bytes" in response.json()["error"]["message"]
    assert app.backend.requests == []
    assert [r.status_code for r in audit_rows(app)] == [413]

    small = app.client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert small.status_code == 200


def test_unknown_route_uses_the_error_shape(appliance: RunningAppliance) -> None:
    response = appliance.client.get("/api/v1/nothing-here", timeout=10)

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}}
