"""The request path under real policies: versions in receipts, block, pseudonyms restored,
answers scanned (whole and streamed), conversation scope. Real model, real detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.auth.actor import Actor
from tests.conftest import RunningAppliance
from tests.integration.api.sse import events

PROJECT_POLICIES = Path(__file__).resolve().parents[3] / "policies"

ECHO_OUTPUT_ONLY = """
name: default
description: Input left alone, answers scanned (test policy).
min_score: 0.4
entities:
  - {entity: EMAIL_ADDRESS, action: allow, applies_to: input}
  - {entity: PHONE_NUMBER, action: allow, applies_to: input}
  - {entity: EMAIL_ADDRESS, action: redact, applies_to: output}
  - {entity: PHONE_NUMBER, action: mask, applies_to: output}
"""

BLOCK_OUTPUT = """
name: default
description: Answers carrying an e-mail address are withheld (test policy).
min_score: 0.4
entities:
  - {entity: EMAIL_ADDRESS, action: allow, applies_to: input}
  - {entity: PHONE_NUMBER, action: block, applies_to: output}
"""

PSEUDONYMS = """
name: default
description: Names pseudonymized per conversation and restored (test policy).
min_score: 0.4
entities:
  - {entity: PERSON, action: pseudonymize, min_score: 0.5}
  - {entity: EMAIL_ADDRESS, action: hash}
output: {scan: true, restore_pseudonyms: true}
pseudonyms: {scope: conversation, ttl_minutes: 30}
"""


def _policies(tmp_path: Path, default_yaml: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "default.yaml").write_text(default_yaml)
    return directory


def _chat(app: RunningAppliance, content: str, **extra: Any) -> Any:
    return app.client.post(
        "/api/v1/chat", json={"messages": [{"role": "user", "content": content}], **extra}
    )


def test_receipt_carries_the_active_version_and_follows_activation(
    appliance: RunningAppliance, tmp_path: Path
) -> None:
    store = appliance.services.policies
    first = _chat(appliance, "Say hello to John Smith.", max_tokens=8).json()["receipt"]
    assert first["policy"] == {"name": "default", "version": store.get().version}

    edited = (
        (PROJECT_POLICIES / "default.yaml").read_text().replace("min_score: 0.4", "min_score: 0.45")
    )
    new = store.create_version("default", edited, author="admin:test", comment="stricter bar")
    store.activate("default", str(new.number), by="admin:test")
    second = _chat(appliance, "Say hello to John Smith.", max_tokens=8).json()["receipt"]
    assert second["policy"]["version"] == new.version != first["policy"]["version"]

    store.rollback("default", by="admin:test")
    third = _chat(appliance, "Say hello to John Smith.", max_tokens=8).json()["receipt"]
    assert third["policy"]["version"] == first["policy"]["version"]


def test_strict_policy_blocks_with_a_receipt_and_sends_nothing(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(default_policy="strict")

    response = _chat(app, "Forward this to bob@example.com please.")

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "pii_blocked"
    assert "EMAIL_ADDRESS" in error["message"]
    assert error["receipt"]["outcome"] == "blocked"
    assert error["receipt"]["entities"] == {"EMAIL_ADDRESS": 1}
    assert error["receipt"]["policy"]["name"] == "strict"
    assert error["receipt"]["audit_id"]
    assert app.backend.requests == []


def test_answers_are_scanned_before_the_caller_sees_them(
    start_appliance: Any, tmp_path: Path
) -> None:
    app: RunningAppliance = start_appliance(policies_dir=_policies(tmp_path, ECHO_OUTPUT_ONLY))

    response = _chat(app, "Repeat exactly: My email is bob@example.com.", max_tokens=30)

    assert response.status_code == 200
    # The model really wrote the address (input was allowed through)...
    assert "bob@example.com" in app.backend.outputs[-1]
    # ...and the caller never saw it.
    body = response.json()
    assert "bob@example.com" not in body["message"]["content"]
    assert "<EMAIL_ADDRESS_1>" in body["message"]["content"]
    assert body["receipt"]["output"]["entities"] == {"EMAIL_ADDRESS": 1}
    assert body["receipt"]["entities"] == {"EMAIL_ADDRESS": 1}
    assert body["receipt"]["actions"] == {"EMAIL_ADDRESS": "allow"}


@pytest.mark.parametrize(
    ("prompt", "raw", "shown"),
    [
        ("Repeat exactly: My email is bob@example.com.", "bob@example.com", "<EMAIL_ADDRESS_1>"),
        ("Repeat exactly: Call 212-555-0199 now.", "212-555-0199", "***-***-0199"),
    ],
)
def test_streamed_answers_are_scanned_without_leaking_a_split_value(
    start_appliance: Any, tmp_path: Path, prompt: str, raw: str, shown: str
) -> None:
    app: RunningAppliance = start_appliance(policies_dir=_policies(tmp_path, ECHO_OUTPUT_ONLY))
    body = {"messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": 30}

    with app.client.stream("POST", "/api/v1/chat", json=body) as response:
        received = list(events(response))

    assert raw in app.backend.outputs[-1]
    deltas = [data["content"] for name, data in received if name == "delta"]
    streamed = "".join(deltas)
    assert raw not in streamed
    assert shown in streamed
    assert all(raw not in d for d in deltas)
    done = received[-1][1]
    assert received[-1][0] == "done"
    assert done["message"]["content"] == streamed
    assert sum(done["receipt"]["output"]["entities"].values()) == 1


def test_an_answer_with_a_blocked_value_is_withheld(start_appliance: Any, tmp_path: Path) -> None:
    app: RunningAppliance = start_appliance(policies_dir=_policies(tmp_path, BLOCK_OUTPUT))

    whole = _chat(app, "Repeat exactly: Call 212-555-0199 now.", max_tokens=30)
    assert "212-555-0199" in app.backend.outputs[-1]
    assert whole.status_code == 422
    assert whole.json()["error"]["field"] == "output"
    assert "212-555-0199" not in whole.text

    body = {
        "messages": [{"role": "user", "content": "Repeat exactly: Call 212-555-0199 now."}],
        "stream": True,
        "max_tokens": 30,
    }
    with app.client.stream("POST", "/api/v1/chat", json=body) as response:
        received = list(events(response))
    assert received[-1][0] == "error"
    assert received[-1][1]["code"] == "pii_blocked"
    assert "0199" not in "".join(d["content"] for n, d in received if n == "delta")


def test_pseudonyms_are_restored_for_the_caller_and_stable_in_a_conversation(
    start_appliance: Any, tmp_path: Path
) -> None:
    app: RunningAppliance = start_appliance(policies_dir=_policies(tmp_path, PSEUDONYMS))

    first = _chat(
        app,
        "Repeat exactly: Hello John Smith, welcome back.",
        max_tokens=20,
        conversation_id="case-7",
    ).json()
    sent = app.backend.requests[-1].messages[0].content
    assert sent == "Repeat exactly: Hello <PERSON_1>, welcome back."
    assert "<PERSON_1>" in app.backend.outputs[-1]
    assert "John Smith" in first["message"]["content"]
    assert first["receipt"]["output"]["restored"] >= 1
    assert first["receipt"]["actions"] == {"PERSON": "pseudonymize"}

    # Same conversation: the same person keeps the same pseudonym, a new one gets the next.
    _chat(app, "Write to Mary Jones about John Smith.", max_tokens=4, conversation_id="case-7")
    later = app.backend.requests[-1].messages[0].content
    assert "<PERSON_1>" in later and "<PERSON_2>" in later and "John Smith" not in later

    # Another conversation does not see case-7's pseudonyms.
    _chat(app, "Write to Mary Jones.", max_tokens=4, conversation_id="case-8")
    assert app.backend.requests[-1].messages[0].content == "Write to <PERSON_1>."

    # Hashing is keyed and stable: the same address gives the same token, never the address.
    _chat(app, "Mail bob@example.com and bob@example.com.", max_tokens=4)
    hashed = app.backend.requests[-1].messages[0].content
    assert "bob@example.com" not in hashed
    tokens = [t for t in hashed.split() if t.startswith("<EMAIL_ADDRESS#")]
    assert len(tokens) == 2 and tokens[0].rstrip(".") == tokens[1].rstrip(".")


def test_request_pseudonyms_are_bound_to_the_caller_not_only_the_request_id(
    start_appliance: Any, tmp_path: Path
) -> None:
    # A request id can be chosen by the client (`X-Request-Id`): another caller reusing one must
    # not get this caller's pseudonyms restored in its answer.
    app: RunningAppliance = start_appliance(policies_dir=_policies(tmp_path, PSEUDONYMS))
    policy = app.services.policies.get("default")

    def scope(actor_id: str) -> str:
        found = app.services.gateway.action_context(
            policy, request_id="shared-1", actor=Actor(id=actor_id, role="staff")
        )[1]
        assert found is not None
        return found.name

    assert scope("user:a") == scope("user:a")
    assert scope("user:a") != scope("user:b")


def test_pii_endpoints_follow_the_contract(appliance: RunningAppliance) -> None:
    text = "Email Jane Doe at jane.doe@example.org or call 212-555-0199."

    analyzed = appliance.client.post("/api/v1/pii/analyze", json={"text": text}).json()
    found = {(e["type"], text[e["start"] : e["end"]]) for e in analyzed["entities"]}
    assert ("EMAIL_ADDRESS", "jane.doe@example.org") in found
    assert ("PERSON", "Jane Doe") in found
    assert {e["type"]: e["action"] for e in analyzed["entities"]} == {
        "EMAIL_ADDRESS": "pseudonymize",
        "PERSON": "pseudonymize",
        "PHONE_NUMBER": "pseudonymize",
    }
    assert analyzed["policy"]["name"] == "default"

    redacted = appliance.client.post(
        "/api/v1/pii/redact", json={"text": text, "policy": "hr"}
    ).json()
    assert "jane.doe@example.org" not in redacted["text"]
    assert "***-***-0199" in redacted["text"]  # hr masks phone numbers
    assert redacted["receipt"]["policy"]["name"] == "hr"

    blocked = appliance.client.post("/api/v1/pii/redact", json={"text": text, "policy": "strict"})
    assert blocked.status_code == 422
    assert blocked.json()["error"]["code"] == "pii_blocked"

    missing = appliance.client.post("/api/v1/pii/analyze", json={"text": text, "policy": "nope"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "policy_not_found"
    empty = appliance.client.post("/api/v1/pii/analyze", json={"text": ""})
    assert empty.status_code == 422
    assert empty.json()["error"]["field"] == "text"
