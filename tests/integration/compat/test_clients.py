"""Existing clients work unchanged: the official `openai` and `ollama` Python clients pointed at
the appliance (base URL + API key), with PII redacted on the way in and receipts present."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from tests.conftest import RunningAppliance

PERSONAL = "Write one line to John Smith (john.smith@example.com, 212-555-0199)."


@pytest.fixture
def openai_client(appliance: RunningAppliance) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{appliance.url}/v1", api_key=_key(appliance)) as client:
        yield client


@pytest.fixture
def ollama_client(appliance: RunningAppliance) -> Iterator[ollama.Client]:
    client = ollama.Client(
        host=f"{appliance.url}/ollama", headers={"Authorization": f"Bearer {_key(appliance)}"}
    )
    yield client
    client.close()


def _key(app: RunningAppliance) -> str:
    auth = app.client.headers.get("Authorization", "")
    assert auth.startswith("Bearer "), "the test client carries an API key"
    return auth.removeprefix("Bearer ")


def test_openai_client_chat_non_streaming(
    appliance: RunningAppliance, openai_client: openai.OpenAI
) -> None:
    client = openai_client

    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m", messages=[{"role": "user", "content": PERSONAL}], max_tokens=16
    )
    completion = raw.parse()

    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    receipt = json.loads(raw.headers["X-Privacy-Receipt"])
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= set(receipt["entities"])
    assert receipt["policy"].startswith("default@")
    assert raw.headers["X-Audit-Id"]
    sent = appliance.backend.received_text()
    assert "john.smith@example.com" not in sent and "<EMAIL_ADDRESS_1>" in sent
    assert [m.id for m in client.models.list()] == appliance.services.registry.names()


def test_openai_client_chat_streaming_and_json_schema(openai_client: openai.OpenAI) -> None:
    client = openai_client

    with client.chat.completions.with_streaming_response.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": PERSONAL}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert json.loads(response.headers["X-Privacy-Receipt"])["entities"]["PERSON"] == 1
        audit_id = response.headers["X-Audit-Id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert (
        final.model_extra is not None
        and final.model_extra["privacy_receipt"]["audit_id"] == audit_id
    )

    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["it", "hr", "finance"]}},
        "required": ["label"],
    }
    structured = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Classify: my laptop will not start."}],
        max_tokens=48,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
    )
    assert json.loads(structured.choices[0].message.content or "")["label"] in {
        "it",
        "hr",
        "finance",
    }


def test_openai_client_sees_openai_errors(
    appliance: RunningAppliance, openai_client: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.code == "model_not_found"
    with (
        openai.OpenAI(base_url=f"{appliance.url}/v1", api_key="sk-wrong") as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        wrong.models.list()


def test_ollama_client_chat_and_generate(
    appliance: RunningAppliance, ollama_client: ollama.Client
) -> None:
    client = ollama_client

    answer = client.chat(
        model="smollm2-135m",
        messages=[{"role": "user", "content": PERSONAL}],
        stream=False,
        options={"num_predict": 16},
    )
    assert answer.message.content
    assert answer.done and answer.eval_count and answer.eval_count > 0
    assert "john.smith@example.com" not in appliance.backend.received_text()

    parts = list(
        client.chat(
            model="smollm2-135m:latest",
            messages=[{"role": "user", "content": PERSONAL}],
            stream=True,
            options={"num_predict": 16},
        )
    )
    assert parts[-1].done and parts[-1].done_reason in {"stop", "length"}
    assert "".join(p.message.content or "" for p in parts)

    generated = client.generate(
        model="smollm2-135m",
        prompt="Say hi to Mary Jones.",
        stream=False,
        options={"num_predict": 8},
    )
    assert generated.response
    assert appliance.backend.requests[-1].messages[0].content == "Say hi to <PERSON_1>."

    names = [m.model for m in client.list().models]
    assert "smollm2-135m:latest" in names
    assert client.show("smollm2-135m").modelinfo is not None
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("no-such-model")
    assert missing.value.status_code == 404


def test_receipt_headers_on_the_rest_api(appliance: RunningAppliance) -> None:
    response = appliance.client.post(
        "/api/v1/chat", json={"messages": [{"role": "user", "content": PERSONAL}], "max_tokens": 4}
    )
    receipt = json.loads(response.headers["X-Privacy-Receipt"])
    assert receipt["entities"] == response.json()["receipt"]["entities"]
    assert response.headers["X-Audit-Id"] == response.json()["receipt"]["audit_id"]
    version = appliance.client.get("/ollama/api/version").json()
    assert version["version"] and version["appliance"]
    assert httpx.get(f"{appliance.url}/ollama/api/tags").status_code == 401


def test_langchain_chat_openai_works_unchanged(appliance: RunningAppliance) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=f"{appliance.url}/v1",
        api_key=_key(appliance),
        model="smollm2-135m",
        max_tokens=12,
        temperature=0,
    )
    reply = llm.invoke(f"Say hello. {PERSONAL}")
    assert isinstance(reply.content, str) and reply.content
    assert "john.smith@example.com" not in appliance.backend.received_text()
    assert reply.response_metadata["model_name"] == "smollm2-135m"
    chunks = list(llm.stream("Count to three."))
    assert "".join(str(c.content) for c in chunks)
