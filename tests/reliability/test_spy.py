"""The spy: no planted identifier reaches a model through any field of any endpoint.

A recording backend sits before the real embedded engine and keeps everything a model could
read (messages, structured-output schemas, which become grammars, scoring choices). Each case
plants the same canaries in one caller field that can reach a model; the engine must never see
them, and the receipt must count what the policy did with them. Issue 17, defect 1.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import RunningAppliance

EMAIL = "mary.jones@example.org"
SSN = "645-12-9876"
CANARY = f"Mary Jones, SSN {SSN}, {EMAIL}"
CANARIES = (EMAIL, SSN)

SCHEMA_WITH_CANARIES: dict[str, Any] = {
    "type": "object",
    "properties": {
        EMAIL: {"type": "string", "description": f"the SSN {SSN}"},
        "kind": {"enum": [EMAIL, "other"]},
        "fixed": {"const": SSN},
    },
    "required": [EMAIL],
}

CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "ask.question",
        "/api/v1/tasks/ask",
        {"text": "The weather is fine.", "params": {"question": f"Repeat: {CANARY}"}},
    ),
    (
        "chat.system",
        "/api/v1/tasks/chat",
        {"text": "Hello there.", "params": {"system": f"Always greet {CANARY}."}},
    ),
    (
        "classify.labels",
        "/api/v1/tasks/classify",
        {"text": "I loved it.", "params": {"labels": [EMAIL, f"ssn {SSN}", "neutral"]}},
    ),
    (
        "extract.schema",
        "/api/v1/tasks/extract",
        {"text": "Invoice total: 40 EUR.", "params": {"schema": SCHEMA_WITH_CANARIES}},
    ),
    (
        "openai.response_format",
        "/v1/chat/completions",
        {
            "model": "smollm2-135m",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say something."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": SCHEMA_WITH_CANARIES},
            },
        },
    ),
    (
        "ollama.format",
        "/ollama/api/chat",
        {
            "model": "smollm2-135m",
            "stream": False,
            "options": {"num_predict": 8},
            "messages": [{"role": "user", "content": "Say something."}],
            "format": SCHEMA_WITH_CANARIES,
        },
    ),
    (
        "ollama.generate.format",
        "/ollama/api/generate",
        {
            "model": "smollm2-135m",
            "stream": False,
            "options": {"num_predict": 8},
            "prompt": "Say something.",
            "format": SCHEMA_WITH_CANARIES,
        },
    ),
]


def _receipt(response: Any) -> dict[str, Any] | None:
    body = response.json()
    if "receipt" in body:
        return dict(body["receipt"])
    if "privacy_receipt" in body:
        return dict(body["privacy_receipt"])
    error = body.get("error")
    if isinstance(error, dict) and "receipt" in error:
        return dict(error["receipt"])
    return None


@pytest.mark.parametrize(("name", "path", "body"), CASES, ids=[c[0] for c in CASES])
def test_no_canary_reaches_the_engine_through_a_caller_field(
    appliance: RunningAppliance, name: str, path: str, body: dict[str, Any]
) -> None:
    response = appliance.client.post(path, json=body, timeout=300)

    assert response.status_code < 500 or response.status_code == 502, response.text
    received = appliance.backend.received_everything()
    assert appliance.backend.requests, f"{name}: nothing reached the engine at all"
    for canary in CANARIES:
        assert canary not in received, f"{name}: {canary!r} reached the engine"
    receipt = _receipt(response)
    if receipt is not None and response.status_code == 200:
        assert {"EMAIL_ADDRESS", "US_SSN"} & set(receipt["entities"]), receipt


def test_strict_blocks_a_canary_in_task_params(appliance: RunningAppliance) -> None:
    """The issue's reproduction: under `strict`, a question holding identifiers is refused,
    counted in the receipt, and nothing is sent."""
    response = appliance.client.post(
        "/api/v1/tasks/ask",
        json={
            "text": "The weather is fine.",
            "policy": "strict",
            "params": {"question": f"Repeat: {CANARY}"},
        },
        timeout=120,
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "pii_blocked"
    assert error["field"] == "params"
    assert {"EMAIL_ADDRESS", "US_SSN"} <= set(error["receipt"]["entities"])
    assert appliance.backend.requests == []


def test_batch_job_and_item_params_are_protected(appliance: RunningAppliance) -> None:
    items = (
        '{"id": "a", "text": "The weather is fine."}\n'
        f'{{"id": "b", "text": "The sky is blue.", "params": {{"question": "Who is {EMAIL}?"}}}}\n'
    )
    response = appliance.client.post(
        "/api/v1/batches",
        files={"file": ("items.jsonl", items.encode())},
        data={"task": "ask", "params": f'{{"question": "Repeat: {CANARY}"}}'},
        timeout=60,
    )
    assert response.status_code in (200, 201, 202), response.text
    job = response.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = appliance.client.get(f"/api/v1/batches/{job}", timeout=30).json()
        if status["status"] == "completed":
            break
        time.sleep(0.5)
    assert status["status"] == "completed", status
    assert len(appliance.backend.requests) >= 2
    received = appliance.backend.received_everything()
    for canary in CANARIES:
        assert canary not in received
