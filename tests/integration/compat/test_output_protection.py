"""Answers are protected by the same recognizers as requests, on every endpoint that generates.

The policy here protects SSNs on the way out only, so the model can be made to write one: a JSON
schema whose `const` is an SSN (a shaped value Presidio's own recognizer calls invalid) forces
the real model to produce it, whole or split across tokens. Whatever the endpoint — OpenAI or
Ollama shape, streamed or not, or a task (whose redacted output then fails its own schema) — the
caller never reads it, while the engine's raw
output (read at the backend seam) shows the model did write it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from appliance.config import PROJECT_ROOT
from tests.conftest import RunningAppliance

SSN = "078-05-1120"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ssn": {"const": f"My SSN is {SSN}."}},
    "required": ["ssn"],
}
MESSAGES = [{"role": "user", "content": "Fill in the form."}]


@pytest.fixture
def echo_guard(
    start_appliance: Callable[..., RunningAppliance], tmp_path: Path
) -> RunningAppliance:
    directory = tmp_path / "policies"
    directory.mkdir()
    default = yaml.safe_load((PROJECT_ROOT / "policies" / "default.yaml").read_text())
    rules = [e for e in default["entities"] if e["entity"] != "US_SSN"]
    rules.append({"entity": "US_SSN", "action": "redact", "applies_to": "output"})
    (directory / "default.yaml").write_text(yaml.safe_dump(default | {"entities": rules}))
    return start_appliance(policies_dir=directory)


def _sse_text(response: httpx.Response) -> str:
    pieces = []
    for line in response.iter_lines():
        if line.startswith("data:") and line.strip() != "data: [DONE]":
            chunk = json.loads(line.split(":", 1)[1])
            pieces.append(chunk["choices"][0]["delta"].get("content") or "")
    return "".join(pieces)


def _ndjson_text(response: httpx.Response, key: str) -> str:
    pieces = []
    for line in response.iter_lines():
        if line.strip():
            part = json.loads(line)
            pieces.append(part["message"]["content"] if key == "message" else part[key])
    return "".join(pieces)


def test_an_ssn_the_model_writes_never_reaches_the_caller(echo_guard: RunningAppliance) -> None:
    client = echo_guard.client
    answers: dict[str, str] = {}

    reply = client.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2-135m",
            "messages": MESSAGES,
            "max_tokens": 40,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "f", "schema": SCHEMA},
            },
        },
    )
    assert reply.status_code == 200, reply.text
    answers["/v1 non-streamed"] = reply.json()["choices"][0]["message"]["content"]

    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "smollm2-135m",
            "messages": MESSAGES,
            "max_tokens": 40,
            "stream": True,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "f", "schema": SCHEMA},
            },
        },
    ) as streamed:
        assert streamed.status_code == 200
        answers["/v1 streamed"] = _sse_text(streamed)

    ollama_body = {
        "model": "smollm2-135m",
        "messages": MESSAGES,
        "format": SCHEMA,
        "options": {"num_predict": 40},
    }
    chat = client.post("/ollama/api/chat", json=ollama_body | {"stream": False})
    assert chat.status_code == 200, chat.text
    answers["/ollama chat"] = chat.json()["message"]["content"]
    with client.stream("POST", "/ollama/api/chat", json=ollama_body | {"stream": True}) as streamed:
        assert streamed.status_code == 200
        answers["/ollama chat streamed"] = _ndjson_text(streamed, "message")
    generated = client.post(
        "/ollama/api/generate",
        json={
            "model": "smollm2-135m",
            "prompt": "Fill in the form.",
            "format": SCHEMA,
            "stream": False,
            "options": {"num_predict": 40},
        },
    )
    assert generated.status_code == 200, generated.text
    answers["/ollama generate"] = generated.json()["response"]

    task = client.post(
        "/api/v1/tasks/extract",
        json={"text": "Fill in the form.", "params": {"schema": SCHEMA}},
    )
    assert task.status_code in (200, 422), task.text
    answers["/api/v1/tasks/extract"] = json.dumps(task.json())

    # The model really wrote the value each time: the protection, not the model, kept it out.
    assert len(echo_guard.backend.outputs) == len(answers)
    assert all(SSN in raw for raw in echo_guard.backend.outputs), echo_guard.backend.outputs
    for endpoint, answer in answers.items():
        assert answer, endpoint
        assert SSN not in answer, endpoint
        assert "US_SSN" in answer, (endpoint, answer)


def test_the_callers_own_pseudonymized_values_come_back_in_the_answer(
    appliance: RunningAppliance,
) -> None:
    """The default pack pseudonymizes a name, and the answer that uses its placeholder is
    restored for the caller (the schema makes the real model write the placeholder)."""
    schema = {
        "type": "object",
        "properties": {"greeting": {"const": "Dear <PERSON_1>,"}},
        "required": ["greeting"],
    }
    reply = appliance.client.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Write a short note to John Smith."}],
            "max_tokens": 30,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "g", "schema": schema},
            },
        },
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # The model saw and wrote only the placeholder; the caller reads the name.
    assert "John Smith" not in appliance.backend.received_text()
    assert "<PERSON_1>" in appliance.backend.outputs[-1]
    assert "Dear John Smith," in body["choices"][0]["message"]["content"]
    receipt = body["privacy_receipt"]
    assert receipt["output"]["restored_entities"] == {"PERSON": 1}
    assert receipt["output"]["restored"] == 1
