"""The review queue through the running app: real tasks on the real models are queued, sealed
under the policy's retention, opened and decided by reviewers, and hidden from admins."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from appliance.db.engine import session_scope
from appliance.review.models import ReviewItem
from appliance.review.queue import METADATA_ONLY
from tests.conftest import RunningAppliance
from tests.integration.auth.conftest import Browser
from tests.integration.review.conftest import LABELS, Start, audit_rows, classify

EMAIL = "ada.lovelace@example.com"
TEXT = f"Please ask {EMAIL} to pay the overdue invoice for March."


@pytest.fixture
def app(start_appliance: Start, policies_dir: Path) -> RunningAppliance:
    """Every classification is queued (threshold 1.0); no escalation, to keep runs short."""
    return start_appliance(
        policies_dir=policies_dir,
        review_confidence_threshold=1.0,
        escalate_on_low_confidence=False,
    )


def rows(app: RunningAppliance) -> list[ReviewItem]:
    with session_scope(app.services.engine) as session:
        return list(session.exec(select(ReviewItem)))


def test_low_confidence_output_is_queued_sealed_and_corrected(
    app: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    result = classify(app, TEXT, policy="kept")
    assert result["status"] == 200, result
    output = result["body"]["output"]
    assert output["confidence"] < 1.0

    [row] = rows(app)
    assert row.reason == "low_confidence" and row.content_kept
    assert row.confidence == pytest.approx(output["confidence"])
    assert row.content_sealed is not None
    # Sealed at rest: neither the text the model saw nor the label is readable in the row.
    assert b"invoice" not in row.content_sealed and EMAIL.encode() not in row.content_sealed
    assert row.expires_at is not None
    assert row.receipt["audit_id"] == result["body"]["receipt"]["audit_id"]

    reviewer = browser_for(app, "staff", reviewer=True)
    listed = reviewer.client.get("/api/v1/review/items").json()
    assert [i["id"] for i in listed["items"]] == [row.id]
    assert listed["counts"] == {"pending": 1, "accepted": 0, "corrected": 0}
    assert "content" not in listed["items"][0]

    opened = reviewer.client.get(f"/api/v1/review/items/{row.id}").json()
    content = opened["content"]
    # What the model saw: the policy's placeholder, never the address itself.
    assert "<EMAIL_ADDRESS_1>" in content["input"] and EMAIL not in content["input"]
    assert content["output"]["label"] == output["label"]
    assert content["params"]["labels"] == LABELS

    right = next(label for label in LABELS if label != output["label"])
    corrected = reviewer.post(f"/api/v1/review/items/{row.id}/correct", json={"expected": right})
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["status"] == "corrected"
    again = reviewer.post(f"/api/v1/review/items/{row.id}/accept")
    assert again.status_code == 409
    reopened = reviewer.client.get(f"/api/v1/review/items/{row.id}").json()
    assert reopened["content"]["expected"] == right
    assert reopened["reviewer"] == f"user:{reviewer.user_id}"

    events = [(e.action, e.target) for e in audit_rows(app, "review.")]
    assert events == [
        ("review.queued", f"review:{row.id}"),
        ("review.opened", f"review:{row.id}"),
        ("review.corrected", f"review:{row.id}"),
        ("review.opened", f"review:{row.id}"),
    ]
    # The trail holds ids and decisions, never the text, the label or the correction.
    trail = json.dumps([[e.details, e.outcome, e.target] for e in audit_rows(app)])
    assert "invoice" not in trail and EMAIL not in trail and f'"{right}"' not in trail


def test_a_policy_that_keeps_no_content_queues_metadata_only(
    app: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    result = classify(app, TEXT)  # the default policy: retention never
    assert result["status"] == 200, result
    [row] = rows(app)
    assert not row.content_kept and row.content_sealed is None and row.expires_at is None
    assert len(row.input_digest) == 64 and row.input_chars > 0

    reviewer = browser_for(app, "staff", reviewer=True)
    opened = reviewer.client.get(f"/api/v1/review/items/{row.id}").json()
    assert opened["content"] is None and opened["note"] == METADATA_ONLY
    assert opened["receipt"]["policy"]["name"] == "default"
    refused = reviewer.post(f"/api/v1/review/items/{row.id}/correct", json={"expected": "billing"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "expected"
    accepted = reviewer.post(f"/api/v1/review/items/{row.id}/accept")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    page = reviewer.client.get(f"/review/{row.id}")
    assert page.status_code == 200 and "metadata only" in page.text


def test_output_that_fails_validation_on_every_tier_is_queued(
    start_appliance: Start, policies_dir: Path, browser_for: Callable[..., Browser]
) -> None:
    app = start_appliance(policies_dir=policies_dir, schema_retries=0)
    # No object satisfies this schema (one property allowed, three required): every tier fails.
    schema = {
        "type": "object",
        "properties": {"amount": {"type": "string"}},
        "additionalProperties": False,
        "minProperties": 3,
    }
    response = app.client.post(
        "/api/v1/tasks/extract",
        json={"text": "Invoice total: 40 EUR.", "params": {"schema": schema}, "policy": "kept"},
        timeout=300,
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "output_invalid"
    [row] = rows(app)
    assert row.reason == "output_invalid" and row.task == "extract" and row.content_kept
    reviewer = browser_for(app, "staff", reviewer=True)
    opened = reviewer.client.get(f"/api/v1/review/items/{row.id}").json()
    assert opened["content"]["output"] is None
    assert opened["content"]["input"] == "Invoice total: 40 EUR."
    bad = reviewer.post(f"/api/v1/review/items/{row.id}/correct", json={"expected": "40"})
    assert bad.status_code == 422
    good = reviewer.post(
        f"/api/v1/review/items/{row.id}/correct", json={"expected": {"amount": "40 EUR"}}
    )
    assert good.status_code == 200, good.text


def test_confident_outputs_are_not_queued(start_appliance: Start, policies_dir: Path) -> None:
    app = start_appliance(policies_dir=policies_dir, review_confidence_threshold=0.0)
    assert classify(app, TEXT, policy="kept")["status"] == 200
    assert rows(app) == []


def test_admins_are_content_blind_and_reviewers_need_the_permission(
    app: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    assert classify(app, TEXT, policy="kept")["status"] == 200
    [row] = rows(app)
    admin = browser_for(app, "admin")
    staff = browser_for(app, "staff")
    for client in (admin.client, staff.client, app.client):  # app.client: a key, every scope
        for path in ("/api/v1/review/items", f"/api/v1/review/items/{row.id}"):
            assert client.get(path).status_code == 403, path
        assert client.get(f"/review/{row.id}").status_code == 403
    # The admin cannot make itself (or any non-staff account) a reviewer.
    me = admin.client.patch(
        f"/api/v1/admin/users/{admin.user_id}",
        json={"reviewer": True},
        headers={"X-CSRF-Token": admin.csrf},
    )
    assert me.status_code == 422 and me.json()["error"]["field"] == "reviewer"
    assert not any(e.action == "review.opened" for e in audit_rows(app))

    # Granting the permission (audited) lets the staff account in after signing in again.
    granted = admin.client.patch(
        f"/api/v1/admin/users/{staff.user_id}",
        json={"reviewer": True},
        headers={"X-CSRF-Token": admin.csrf},
    )
    assert granted.status_code == 200 and granted.json()["user"]["reviewer"] is True
    changed = audit_rows(app, "user.reviewer_changed")
    assert [(e.outcome, e.target) for e in changed] == [("granted", f"user:{staff.user_id}")]
    assert staff.client.get("/api/v1/review/items").status_code == 401  # sessions ended
    reviewer = browser_for(app, "staff", reviewer=True)
    assert reviewer.client.get("/api/v1/review/items").status_code == 200


def test_a_correction_round_trips_into_a_golden_set(
    app: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    from appliance.eval.goldensets import create_set, load_items, parse

    result = classify(app, TEXT, policy="kept")
    assert result["status"] == 200, result
    [row] = rows(app)
    reviewer = browser_for(app, "staff", reviewer=True)
    right = next(label for label in LABELS if label != result["body"]["output"]["label"])
    assert (
        reviewer.post(
            f"/api/v1/review/items/{row.id}/correct", json={"expected": right}
        ).status_code
        == 200
    )
    missing = reviewer.post(f"/api/v1/review/items/{row.id}/golden", json={"set_name": "nope"})
    assert missing.status_code == 404, missing.text

    queue = app.services.review
    assert queue is not None
    seed = parse(b'{"input": "Lunch in room 2.", "expected": "meeting"}\n', task="classify")
    create_set(
        app.services.engine, queue.sealer, name="tickets", task="classify", rows=seed, author="t"
    )
    added = reviewer.post(f"/api/v1/review/items/{row.id}/golden", json={"set_name": "tickets"})
    assert added.status_code == 200, added.text
    assert added.json()["version"] == 2
    _, version, items = load_items(app.services.engine, queue.sealer, "tickets")
    assert version == 2 and len(items) == 2
    assert items[-1].expected == right
    assert "<EMAIL_ADDRESS_1>" in items[-1].input and EMAIL not in items[-1].input
    [event] = audit_rows(app, "review.golden_added")
    assert event.details["set"] == "tickets" and event.details["version"] == 2
    listed = reviewer.client.get("/api/v1/review/items", params={"status": "corrected"}).json()
    assert listed["items"][0]["golden_set"] == "tickets"
