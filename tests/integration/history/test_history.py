"""Request history: content kept only where the policy retains it, sealed, expiring, owner-only.

Real app, real detector, real database (SQLite and PostgreSQL). The `redact` task needs no
model, so these tests exercise the history without waiting on inference; re-running a chat is
covered in the browser test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from appliance.history.models import HistoryRow
from tests.conftest import RunningAppliance
from tests.integration.api.sse import events
from tests.integration.auth.conftest import Browser
from tests.support.retention import retaining_policies

TEXT = "Send the offer to Jane Smith at jane.smith@example.com by Friday."


@pytest.fixture
def retaining(start_appliance: Callable[..., RunningAppliance], tmp_path: Path) -> RunningAppliance:
    return start_appliance(policies_dir=retaining_policies(tmp_path), document_sweep_interval_s=0.2)


def redact(browser: Browser) -> str:
    """Run `redact` as the signed-in user; returns the audit id from the receipt."""
    response = browser.post("/api/v1/tasks/redact", json={"text": TEXT})
    assert response.status_code == 200, response.text
    return str(response.json()["receipt"]["audit_id"])


def rows(app: RunningAppliance) -> list[HistoryRow]:
    with Session(app.services.engine) as session:
        return list(session.exec(select(HistoryRow)).all())


def audit(app: RunningAppliance, action: str) -> list[AuditEvent]:
    with Session(app.services.engine) as session:
        found = session.exec(select(AuditEvent).where(AuditEvent.action == action))
        return list(found.all())


def test_retained_content_is_sealed_and_shown_to_its_owner_only(
    retaining: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    owner = browser_for(retaining, "staff")
    audit_id = redact(owner)

    [row] = rows(retaining)
    assert row.id == audit_id and row.owner == f"user:{owner.user_id}" and row.task == "redact"
    assert row.policy.startswith("default@")
    # Sealed at rest: neither the text nor the e-mail address is in the stored bytes.
    assert b"jane.smith" not in row.content_sealed and b"Jane Smith" not in row.content_sealed
    expires = (
        row.expires_at.replace(tzinfo=UTC) if row.expires_at.tzinfo is None else row.expires_at
    )
    assert abs(expires - datetime.now(UTC) - timedelta(days=7)) < timedelta(minutes=5)

    page = owner.client.get("/history")
    assert page.status_code == 200
    assert "retained (encrypted)" in page.text and f'href="/history/{audit_id}"' in page.text
    entry = owner.client.get(f"/history/{audit_id}")
    assert entry.status_code == 200
    assert "jane.smith@example.com" in entry.text  # the owner's own text, decrypted
    assert "&lt;EMAIL_ADDRESS" in entry.text or "EMAIL_ADDRESS" in entry.text  # the answer

    other = browser_for(retaining, "staff")
    assert other.client.get(f"/history/{audit_id}").status_code == 404
    assert other.post(f"/history/{audit_id}/rerun").status_code == 404
    assert other.post(f"/history/{audit_id}/delete").status_code == 404
    assert len(rows(retaining)) == 1


def test_rerun_goes_through_the_gateway_and_delete_removes_the_content(
    retaining: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    owner = browser_for(retaining, "staff")
    audit_id = redact(owner)
    before = len(audit(retaining, "completion.redacted"))

    again = owner.post(f"/history/{audit_id}/rerun", headers={"HX-Request": "true"})

    assert again.status_code == 200, again.text
    assert "jane.smith@example.com" not in again.text and "EMAIL_ADDRESS" in again.text
    new_id = re.search(r"data-audit-id>([0-9a-f]{32})<", again.text)
    assert new_id and new_id.group(1) != audit_id
    # A new request on the normal path: audited, and its content retained in turn.
    assert len(audit(retaining, "completion.redacted")) == before + 1
    assert {r.id for r in rows(retaining)} == {audit_id, new_id.group(1)}

    deleted = owner.post(f"/history/{audit_id}/delete", headers={"HX-Request": "true"})
    assert deleted.status_code == 200 and "deleted" in deleted.text
    assert {r.id for r in rows(retaining)} == {new_id.group(1)}
    assert owner.client.get(f"/history/{audit_id}").status_code == 404
    [event] = audit(retaining, "history.deleted")
    assert event.target == audit_id and event.actor == f"user:{owner.user_id}"
    # The receipt itself stays in the history.
    assert audit_id[:12] in owner.client.get("/history").text


def test_rerun_keeps_the_policy_the_request_ran_under(
    start_appliance: Callable[..., RunningAppliance],
    browser_for: Callable[..., Browser],
    tmp_path: Path,
) -> None:
    app = start_appliance(policies_dir=retaining_policies(tmp_path, names=("default", "hr")))
    owner = browser_for(app, "staff")
    sent = owner.post("/api/v1/tasks/redact", json={"text": TEXT, "policy": "hr"})
    assert sent.status_code == 200, sent.text
    audit_id = sent.json()["receipt"]["audit_id"]

    again = owner.post(f"/history/{audit_id}/rerun", headers={"HX-Request": "true"})

    assert again.status_code == 200, again.text
    assert {r.policy.partition("@")[0] for r in rows(app)} == {"hr"}
    assert len(rows(app)) == 2


def test_expired_content_is_swept_and_audited(
    retaining: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    owner = browser_for(retaining, "staff")
    audit_id = redact(owner)
    with Session(retaining.services.engine) as session:
        row = session.get(HistoryRow, audit_id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
        session.commit()

    # Wait for what is asserted, the event; the row goes in the same commit, so once the event
    # is there the row is gone, however slow the machine.
    deadline = time.monotonic() + 60
    while not audit(retaining, "history.expired"):
        assert time.monotonic() < deadline, "the expired content was not swept"
        time.sleep(0.1)

    [event] = audit(retaining, "history.expired")
    assert event.target == audit_id and event.actor == "system"
    assert rows(retaining) == []


def test_a_sweep_removes_each_row_with_its_event(
    start_appliance: Callable[..., RunningAppliance],
    browser_for: Callable[..., Browser],
    tmp_path: Path,
) -> None:
    # The test drives the sweep itself; the app's own sweeper may run at the same moment (it
    # starts with one), and between them the row still goes once, with one event.
    app = start_appliance(policies_dir=retaining_policies(tmp_path), document_sweep_interval_s=3600)
    owner = browser_for(app, "staff")
    stale, fresh = redact(owner), redact(owner)
    with Session(app.services.engine) as session:
        row = session.get(HistoryRow, stale)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
        session.commit()
    history = app.services.history
    assert history is not None

    history.sweep_sync()
    assert history.sweep_sync() == 0

    assert [r.id for r in rows(app)] == [fresh]
    [event] = audit(app, "history.expired")
    assert (event.target, event.details["task"]) == (stale, "redact")
    assert owner.post(f"/history/{stale}/delete").status_code == 404
    assert audit(app, "history.deleted") == []


def test_nothing_is_kept_when_the_policy_retains_nothing_or_for_api_keys(
    appliance: RunningAppliance,
    browser_for: Callable[..., Browser],
    start_appliance: Callable[..., RunningAppliance],
    tmp_path: Path,
) -> None:
    # The shipped default policy says `retention: never`.
    owner = browser_for(appliance, "staff")
    redact(owner)
    assert rows(appliance) == []
    assert "not retained" in owner.client.get("/history").text
    # Under a retaining policy, a key's requests are not kept: history is a user's own page.
    keyed = start_appliance(policies_dir=retaining_policies(tmp_path))
    response = keyed.client.post("/api/v1/tasks/redact", json={"text": TEXT})
    assert response.status_code == 200
    assert rows(keyed) == []


def test_a_streamed_chat_is_kept_with_its_answer(
    retaining: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    owner = browser_for(retaining, "staff")
    body = {"messages": [{"role": "user", "content": TEXT}], "stream": True, "max_tokens": 8}

    response = owner.post("/api/v1/chat", json=body)

    assert response.status_code == 200, response.text
    [done] = [data for name, data in events(response) if name == "done"]
    [row] = rows(retaining)
    assert row.id == done["receipt"]["audit_id"]
    assert row.task == "chat" and row.owner == f"user:{owner.user_id}"
    kept = retaining.services.history.open(row.owner, row.id)  # type: ignore[union-attr]
    # What the user sent and exactly the answer they were shown (after the output scan).
    assert kept.text == TEXT
    assert kept.output == done["message"]["content"]


def test_an_evaluation_run_keeps_nothing_in_the_admins_history(
    retaining: RunningAppliance, browser_for: Callable[..., Browser]
) -> None:
    from tests.integration.eval.test_runs import sample_lines, wait_run

    admin = browser_for(retaining, "admin")
    uploaded = admin.post(
        "/api/v1/eval/sets",
        files={"file": ("hr.jsonl", sample_lines("hr-tickets", 3))},
        data={"name": "hr", "task": "classify", "params": '{"labels": ["pay", "leave"]}'},
    )
    assert uploaded.status_code == 201, uploaded.text
    started = admin.post("/api/v1/eval/runs", json={"set": "hr", "models": ["gemma3-270m"]})
    assert started.status_code == 202, started.text
    wait_run(admin.client, started.json()["id"], lambda r: r["status"] == "completed")

    # The policy retains content, yet the golden items and outputs are in nobody's history...
    assert rows(retaining) == []
    # ...while the same admin's own request is kept (the history is on).
    redact(admin)
    assert len(rows(retaining)) == 1
