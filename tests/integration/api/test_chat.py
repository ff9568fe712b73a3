"""`POST /api/v1/chat` end to end: real Presidio, real embedded model, real database."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.integration.api.sse import events

NAME, EMAIL, PHONE = "John Smith", "john.smith@example.com", "212-555-0199"
PERSONAL = f"Write a short note to {NAME} ({EMAIL}, phone {PHONE}) about his meeting."


def chat(app: RunningAppliance, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return app.client.post("/api/v1/chat", json=body, timeout=120, **kwargs)


def audit_rows(app: RunningAppliance) -> list[AuditEvent]:
    """The audit rows of requests (not the set-up's own events such as key creation)."""
    with Session(app.services.engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.seq))  # type: ignore[arg-type]
        return [r for r in rows if not r.action.startswith(("apikey.", "user.", "audit."))]


def test_identifiers_are_replaced_before_the_model_sees_them(appliance: RunningAppliance) -> None:
    response = chat(appliance, {"messages": [{"role": "user", "content": PERSONAL}]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"].strip()
    receipt = body["receipt"]
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= set(receipt["entities"])
    # The default pack pseudonymizes contact details: the model sees placeholders, the caller
    # gets its own values back in the answer.
    assert receipt["actions"]["PERSON"] == "pseudonymize"
    assert receipt["outcome"] == "redacted"
    policy = appliance.services.policies.get()
    assert receipt["policy"] == {"name": "default", "version": policy.version}
    assert receipt["model"] == "smollm2-135m"
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["prompt_tokens"] > 0

    # What the model received, read at the backend seam.
    sent = appliance.backend.received_text()
    for value in (NAME, EMAIL, PHONE):
        assert value not in sent
    for placeholder in ("<PERSON_1>", "<EMAIL_ADDRESS_1>", "<PHONE_NUMBER_1>"):
        assert placeholder in sent

    rows = audit_rows(appliance)
    assert [r.id for r in rows] == [receipt["audit_id"]]
    assert rows[0].outcome == "redacted"
    assert rows[0].entity_counts == receipt["entities"]
    assert rows[0].policy == f"default@{policy.version}"
    assert rows[0].request_id == response.headers["X-Request-Id"]


def test_same_value_gets_same_placeholder_across_messages(appliance: RunningAppliance) -> None:
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Mail alice.jones@example.org and bob@example.net today."},
        {"role": "assistant", "content": "Which address first?"},
        {"role": "user", "content": "First ALICE.JONES@example.org, then bob@example.net."},
    ]
    response = chat(appliance, {"messages": messages})

    assert response.status_code == 200, response.text
    assert response.json()["receipt"]["entities"]["EMAIL_ADDRESS"] == 4
    sent = [m.content for m in appliance.backend.requests[-1].messages]
    assert sent[1] == "Mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2> today."
    assert sent[3] == "First <EMAIL_ADDRESS_1>, then <EMAIL_ADDRESS_2>."
    assert sent[0] == "You answer briefly."


def test_text_without_identifiers_passes_unchanged(appliance: RunningAppliance) -> None:
    text = "Summarise the benefits of regular code review in one sentence."
    response = chat(appliance, {"messages": [{"role": "user", "content": text}]})

    assert response.status_code == 200
    assert response.json()["receipt"]["outcome"] == "allowed"
    assert response.json()["receipt"]["entities"] == {}
    assert appliance.backend.requests[-1].messages[0].content == text


def test_streaming_sends_deltas_then_the_receipt(appliance: RunningAppliance) -> None:
    body = {"messages": [{"role": "user", "content": PERSONAL}], "stream": True, "max_tokens": 20}
    with appliance.client.stream("POST", "/api/v1/chat", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))

    names = [name for name, _ in received]
    assert names[-1] == "done"
    assert names.count("delta") >= 1
    assert set(names[:-1]) == {"delta"}
    done = received[-1][1]
    streamed = "".join(data["content"] for name, data in received if name == "delta")
    assert done["message"]["content"] == streamed
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= set(done["receipt"]["entities"])
    assert done["usage"]["completion_tokens"] <= 20
    assert EMAIL not in appliance.backend.received_text()
    rows = audit_rows(appliance)
    assert [r.id for r in rows] == [done["receipt"]["audit_id"]]


def test_second_bundled_model_serves_by_name(appliance: RunningAppliance) -> None:
    response = chat(
        appliance,
        {"messages": [{"role": "user", "content": "Name a colour."}], "model": "gemma3-270m"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["receipt"]["model"] == "gemma3-270m"
    assert appliance.backend.requests[-1].model == "gemma3-270m"


def test_unknown_model_is_404_listing_the_available_ones(appliance: RunningAppliance) -> None:
    response = chat(appliance, {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-5"})

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["field"] == "model"
    assert error["available"] == ["gemma3-270m", "smollm2-135m"]
    assert appliance.backend.requests == []
    assert [r.outcome for r in audit_rows(appliance)] == ["model_not_found"]


def test_an_identifier_split_across_two_messages_reaches_no_model(
    appliance: RunningAppliance,
) -> None:
    messages = [
        {"role": "user", "content": "Please file this for me. My SSN is 078-05"},
        {"role": "user", "content": "-1120 and my claim is due."},
    ]
    response = chat(appliance, {"messages": messages, "max_tokens": 4})
    assert response.status_code == 200, response.text
    assert response.json()["receipt"]["entities"].get("US_SSN") == 2  # one half in each
    sent = appliance.backend.received_text()
    assert "078-05" not in sent
    assert "1120" not in sent
