"""Malformed bodies are clean 4xx on every JSON endpoint, never a 500: invalid UTF-8 and JSON
nested thousands deep, at the top level and inside `format` / `params.schema`. Issue 17,
defect 4."""

from __future__ import annotations

import pytest

from tests.conftest import RunningAppliance
from tests.integration.api.test_chat import audit_rows

MESSAGE = b'"messages": [{"role": "user", "content": "'
ENDPOINTS = [
    ("/api/v1/chat", b"{" + MESSAGE),
    ("/v1/chat/completions", b'{"model": "smollm2-135m", ' + MESSAGE),
    ("/ollama/api/chat", b'{"model": "smollm2-135m", ' + MESSAGE),
    ("/api/v1/pii/redact", b'{"text": "'),
    ("/api/v1/tasks/summarize", b'{"text": "'),
]
DEEP = 5_000


@pytest.mark.parametrize(("path", "prefix"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_invalid_utf8_is_400_malformed_body(
    appliance: RunningAppliance, path: str, prefix: bytes
) -> None:
    body = prefix + b"caf\xe9 \xff\xfe" + (b'"}]}' if b"messages" in prefix else b'"}')
    response = appliance.client.post(
        path, content=body, headers={"content-type": "application/json"}, timeout=30
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if path.startswith("/api/"):
        assert error["code"] == "malformed_body"
        assert error["field"] == "body"
    assert appliance.backend.requests == []


DEEP_BODIES = [
    ("/api/v1/chat", b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    ("/v1/chat/completions", b'{"model": "m", "messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    (
        "/ollama/api/chat",
        b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], '
        b'"format": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
    ),
    ("/api/v1/pii/redact", b'{"text": "x", "policy": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    (
        "/api/v1/tasks/extract",
        b'{"text": "x", "params": {"schema": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}}",
    ),
]


@pytest.mark.parametrize(("path", "body"), DEEP_BODIES, ids=[e[0] for e in DEEP_BODIES])
def test_deeply_nested_json_is_400_never_500(
    appliance: RunningAppliance, path: str, body: bytes
) -> None:
    response = appliance.client.post(
        path, content=body, headers={"content-type": "application/json"}, timeout=30
    )

    assert response.status_code == 400, response.text
    if path.startswith("/api/"):
        assert response.json()["error"]["code"] == "malformed_body"
    assert appliance.backend.requests == []


def test_moderately_nested_schema_is_422_naming_the_field(appliance: RunningAppliance) -> None:
    """Within the body's depth limit but past the schema's: a 422 naming the schema field."""
    schema: dict[str, object] = {"type": "string"}
    for _ in range(30):
        schema = {"type": "array", "items": schema}
    response = appliance.client.post(
        "/api/v1/tasks/extract",
        json={"text": "x", "params": {"schema": {"type": "object", "properties": {"a": schema}}}},
        timeout=30,
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith("params.schema.properties.a")
    assert appliance.backend.requests == []


def test_a_malformed_body_is_audited_without_its_content(appliance: RunningAppliance) -> None:
    response = appliance.client.post(
        "/api/v1/chat",
        content=b'{"messages": [{"role": "user", "content": "Mary \xff Jones"}]}',
        headers={"content-type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 400
    rows = audit_rows(appliance)
    assert [(r.outcome, r.status_code) for r in rows] == [("malformed_body", 400)]
    assert "Mary" not in repr(rows[0].model_dump())
