"""External tiers and tier fallback through the app, with a real OpenAI-compatible server.

The "external" backend here is llama-cpp-python's server on 127.0.0.1 declared with tier
`external`: it stands where a frontier API would, so the rule is tested on a real call path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from appliance.config import PROJECT_ROOT
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.support.llama_server import LlamaServer

Start = Callable[..., RunningAppliance]


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    """The shipped default, plus two policies that allow external models."""
    directory = tmp_path / "policies"
    directory.mkdir()
    default = yaml.safe_load((PROJECT_ROOT / "policies" / "default.yaml").read_text())
    (directory / "default.yaml").write_text(yaml.safe_dump(default))
    allowed = default | {"name": "external-ok", "routing": {"allow_external": True}}
    (directory / "external-ok.yaml").write_text(yaml.safe_dump(allowed))
    leaky = allowed | {
        "name": "external-leaky",
        "entities": [
            {"entity": "EMAIL_ADDRESS", "action": "allow"} if e["entity"] == "EMAIL_ADDRESS" else e
            for e in default["entities"]
        ],
    }
    (directory / "external-leaky.yaml").write_text(yaml.safe_dump(leaky))
    return directory


@pytest.fixture
def external_app(
    start_appliance: Start, llama_server: LlamaServer, policies_dir: Path, tmp_path: Path
) -> RunningAppliance:
    config = tmp_path / "inference.toml"
    config.write_text(
        f"""
[[backends]]
name = "frontier"
kind = "openai_compat"
tier = "external"
structured_output = "json_object"
nodes = [{{ url = "{llama_server.base_url}" }}]
models = [{{ name = "frontier-model", served_as = "smollm2-135m", context_length = 2048 }}]
"""
    )
    return start_appliance(inference_file=config, policies_dir=policies_dir)


def chat_task(app: RunningAppliance, text: str, **body: object) -> dict[str, object]:
    response = app.client.post(
        "/api/v1/tasks/chat", json={"text": text, "model": "frontier-model", **body}, timeout=300
    )
    return {"status": response.status_code, "body": response.json()}


def audit_actions(app: RunningAppliance) -> list[str]:
    with Session(app.services.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.seq))]  # type: ignore[arg-type]


def test_external_model_serves_when_the_policy_allows_it(external_app: RunningAppliance) -> None:
    result = chat_task(external_app, "Say hello to <nobody>.", policy="external-ok")
    assert result["status"] == 200, result
    body = result["body"]
    assert isinstance(body, dict)
    assert body["receipt"]["route"]["tier"] == "external"
    assert body["receipt"]["model"] == "frontier-model"
    assert body["output"]["reply"]
    assert external_app.backend.requests == []  # nothing on the embedded engine


def test_external_model_is_refused_without_allow_external(external_app: RunningAppliance) -> None:
    result = chat_task(external_app, "Say hello.")
    assert result["status"] == 403
    body = result["body"]
    assert isinstance(body, dict)
    assert body["error"]["code"] == "external_refused"
    assert "does not allow external" in body["error"]["message"]
    assert audit_actions(external_app)[-1] == "external.refused"


def test_unredacted_identifier_is_refused_and_audited(external_app: RunningAppliance) -> None:
    text = "Write to ada.lovelace@example.com about the meeting."
    result = chat_task(external_app, text, policy="external-leaky")
    assert result["status"] == 403
    body = result["body"]
    assert isinstance(body, dict)
    error = body["error"]
    assert error["code"] == "external_refused"
    assert error["entities"] == ["EMAIL_ADDRESS"]
    assert error["receipt"]["actions"]["EMAIL_ADDRESS"] == "allow"
    assert audit_actions(external_app)[-1] == "external.refused"
    # The same text under a policy that redacts the address may go out.
    ok = chat_task(external_app, text, policy="external-ok")
    assert ok["status"] == 200, ok


def test_escalation_reaches_external_only_when_allowed(external_app: RunningAppliance) -> None:
    body = {
        "text": "The meeting moved to room 4.",
        "params": {"labels": ["meeting", "recipe"], "threshold": 0.999},
    }
    strict = external_app.client.post("/api/v1/tasks/classify", json=body, timeout=300).json()
    assert [e["to"]["tier"] for e in strict["receipt"]["route"]["escalations"]] == ["large"]

    allowed = external_app.client.post(
        "/api/v1/tasks/classify", json=body | {"policy": "external-ok"}, timeout=300
    ).json()
    tiers = [e["to"]["tier"] for e in allowed["receipt"]["route"]["escalations"]]
    assert tiers == ["large", "external"]


def test_dead_small_tier_falls_back_to_the_next_tier(
    start_appliance: Start, dead_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "inference.toml"
    config.write_text(
        f"""
[[backends]]
name = "flaky"
kind = "openai_compat"
tier = "small"
connect_timeout_s = 0.5
nodes = [{{ url = "{dead_url}" }}]
models = [{{ name = "flaky-small" }}]
"""
    )
    app = start_appliance(
        inference_file=config,
        model_tiers={"smollm2-135m": "large", "gemma3-270m": "large"},
        default_model="flaky-small",
    )
    response = app.client.post(
        "/api/v1/chat", json={"messages": [{"role": "user", "content": "Say hi."}]}, timeout=300
    )
    assert response.status_code == 200, response.text
    route = response.json()["receipt"]["route"]
    assert route["escalations"][0]["from"]["model"] == "flaky-small"
    assert route["escalations"][0]["reason"] == "flaky-small unavailable (backend_unavailable)"
    assert route["tier"] == "large"
    assert app.backend.requests[-1].model == route["model"]
