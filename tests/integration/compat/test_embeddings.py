"""`POST /v1/embeddings` through the gateway, driven by the official `openai` client.

The embedded engine embeds for real (a separate llama.cpp instance of the bundled model in
embedding mode, token vectors mean-pooled). An Ollama node is the FAKE Ollama of
tests/support/fake_ollama.py over real HTTP on 127.0.0.1, replaying `/api/embed` as
ollama/ollama docs/api.md documents it. Either way the model sees the policy-transformed text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import ollama
import openai
import pytest
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.support.fake_ollama import FakeOllamaServer

PERSONAL = "Write one line to John Smith (john.smith@example.com, 212-555-0199)."
PLAIN = "The quarterly report is due on Friday."


def _key(app: RunningAppliance) -> str:
    return str(app.client.headers["Authorization"]).removeprefix("Bearer ")


@pytest.fixture
def openai_client(appliance: RunningAppliance) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{appliance.url}/v1", api_key=_key(appliance)) as client:
        yield client


def audit_row(app: RunningAppliance, audit_id: str) -> AuditEvent:
    with Session(app.services.engine) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.id == audit_id)).first()
    assert row is not None, "the request has no audit row"
    return row


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_openai_client_embeds_redacted_text_on_the_embedded_engine(
    appliance: RunningAppliance, openai_client: openai.OpenAI
) -> None:
    raw = openai_client.embeddings.with_raw_response.create(
        model="smollm2-135m", input=[PERSONAL, PLAIN, PLAIN]
    )
    result = raw.parse()

    # The vectors: one per input, the model's width, the same text gives the same vector.
    assert [d.index for d in result.data] == [0, 1, 2]
    width = len(result.data[0].embedding)
    assert width == 576  # SmolLM2-135M's hidden size
    assert all(len(d.embedding) == width for d in result.data)
    assert result.data[1].embedding == pytest.approx(result.data[2].embedding, abs=1e-5)
    assert cosine(result.data[0].embedding, result.data[1].embedding) < 0.9999
    assert result.usage.prompt_tokens > 0

    # The model saw only the transformed text.
    received = appliance.backend.embedded[-1]
    assert len(received) == 3
    assert "john.smith@example.com" not in received[0] and "John Smith" not in received[0]
    assert "<EMAIL_ADDRESS_1>" in received[0]
    assert received[1] == PLAIN

    # The receipt rides in the headers and the body, and names the audit row.
    receipt = json.loads(raw.headers["X-Privacy-Receipt"])
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= set(receipt["entities"])
    assert receipt["model"] == "smollm2-135m" and receipt["policy"].startswith("default@")
    audit_id = raw.headers["X-Audit-Id"]
    assert result.model_extra is not None
    assert result.model_extra["privacy_receipt"]["audit_id"] == audit_id
    row = audit_row(appliance, audit_id)
    assert row.model == "smollm2-135m" and row.entity_counts["EMAIL_ADDRESS"] == 1
    assert "john.smith" not in json.dumps(row.details)


def test_float_encoding_and_refusals_in_openai_shape(
    appliance: RunningAppliance, openai_client: openai.OpenAI
) -> None:
    floats = appliance.client.post(
        "/v1/embeddings",
        json={"model": "smollm2-135m", "input": PLAIN, "encoding_format": "float"},
    )
    assert floats.status_code == 200, floats.text
    vector = floats.json()["data"][0]["embedding"]
    assert len(vector) == 576 and all(isinstance(x, float) for x in vector)
    assert floats.headers["X-Audit-Id"]

    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.embeddings.create(model="text-embedding-3-small", input=PLAIN)
    assert missing.value.code == "model_not_found"

    empty = appliance.client.post("/v1/embeddings", json={"model": "smollm2-135m", "input": []})
    assert empty.status_code in (400, 422)
    assert "input" in json.dumps(empty.json()["error"])

    # More tokens than the model embeds at once: refused, not silently cut.
    long = appliance.client.post(
        "/v1/embeddings", json={"model": "smollm2-135m", "input": "word " * 1500}
    )
    assert long.status_code == 422, long.text
    assert long.json()["error"]["param"] == "input"

    tokens = appliance.client.post(
        "/v1/embeddings", json={"model": "smollm2-135m", "input": [[1, 2, 3]]}
    )
    assert tokens.status_code in (400, 422)
    assert "input" in json.dumps(tokens.json()["error"])


def test_blocking_policy_refuses_before_the_model(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    app = start_appliance(default_policy="strict")
    with (
        openai.OpenAI(base_url=f"{app.url}/v1", api_key=_key(app)) as client,
        pytest.raises(openai.APIStatusError) as blocked,
    ):
        client.embeddings.create(model="smollm2-135m", input=PERSONAL)
    assert 400 <= blocked.value.status_code < 500
    assert app.backend.embedded == []  # nothing reached the model


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllamaServer]:
    with FakeOllamaServer() as server:
        yield server


@pytest.fixture
def app_with_nodes(
    start_appliance: Callable[..., RunningAppliance], fake_ollama: FakeOllamaServer, tmp_path: Path
) -> RunningAppliance:
    """An Ollama node (the fake) that embeds, and an OpenAI-compatible node that cannot."""
    config = tmp_path / "inference.toml"
    config.write_text(
        f'[[backends]]\nname = "ollama"\nkind = "ollama"\n\n'
        f'[[backends.nodes]]\nurl = "{fake_ollama.url}"\n\n'
        '[[backends.models]]\nname = "llama3.2:3b"\n\n'
        '[[backends]]\nname = "vllm"\nkind = "openai_compat"\n\n'
        '[[backends.nodes]]\nurl = "http://127.0.0.1:9/v1"\n\n'
        '[[backends.models]]\nname = "qwen-7b"\n'
    )
    return start_appliance(inference_file=config)


def test_ollama_node_embeds_redacted_text_and_others_refuse_naming_model(
    app_with_nodes: RunningAppliance, fake_ollama: FakeOllamaServer
) -> None:
    app = app_with_nodes
    with openai.OpenAI(base_url=f"{app.url}/v1", api_key=_key(app)) as client:
        raw = client.embeddings.with_raw_response.create(
            model="llama3.2:3b", input=[PERSONAL, PLAIN]
        )
        result = raw.parse()
        # The fake's replayed vectors, through base64 float32 and back.
        flat = [x for d in result.data for x in d.embedding]
        assert flat == pytest.approx([0.01, -0.02, 0.03, 0.02, -0.02, 0.03], abs=1e-6)
        assert raw.headers["X-Audit-Id"]
        assert json.loads(raw.headers["X-Privacy-Receipt"])["entities"]["EMAIL_ADDRESS"] == 1

        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.embeddings.create(model="qwen-7b", input=PLAIN)
    body = refused.value.body
    assert isinstance(body, dict) and body.get("param") == "model"
    assert "llama3.2:3b" in str(body.get("message"))  # names the models that can

    sent = [b for path, b in fake_ollama.fake.requests if path == "/api/embed"]
    assert len(sent) == 1 and sent[0]["model"] == "llama3.2:3b"
    assert "john.smith@example.com" not in json.dumps(sent[0])
    assert "<EMAIL_ADDRESS_1>" in sent[0]["input"][0] and sent[0]["input"][1] == PLAIN


def test_ollama_client_embeds_through_the_same_path(appliance: RunningAppliance) -> None:
    client = ollama.Client(
        host=f"{appliance.url}/ollama", headers={"Authorization": f"Bearer {_key(appliance)}"}
    )
    try:
        answer = client.embed(model="smollm2-135m:latest", input=[PERSONAL, PLAIN])
    finally:
        client.close()
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) == 576
    received = appliance.backend.embedded[-1]
    assert "john.smith@example.com" not in received[0] and "<EMAIL_ADDRESS_1>" in received[0]

    raw = appliance.client.post("/ollama/api/embed", json={"model": "smollm2-135m", "input": PLAIN})
    assert raw.status_code == 200, raw.text
    assert raw.headers["X-Audit-Id"] == raw.json()["privacy_receipt"]["audit_id"]
    refused = appliance.client.post(
        "/ollama/api/embed", json={"model": "smollm2-135m", "input": []}
    )
    assert refused.status_code == 422
