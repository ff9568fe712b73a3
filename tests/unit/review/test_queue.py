"""The review queue service on SQLite and PostgreSQL: what is queued, what is kept, sealing
bound to the row, expiry, decisions and their audit events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from appliance.auth.actor import Purpose
from appliance.db.engine import session_scope
from appliance.db.models import AuditEvent, utcnow
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.policies.schema import LoadedPolicy, Policy
from appliance.review.models import ReviewItem
from appliance.review.queue import EXPIRED, METADATA_ONLY, Captured, ReviewQueue, check_expected


def policy(retention: dict[str, Any]) -> LoadedPolicy:
    body = Policy(
        name="p", entities=[{"entity": "PERSON", "action": "redact"}], retention=retention
    )
    return LoadedPolicy(policy=body, version="v1", source="")


KEPT = policy({"content": "encrypted", "days": 3})
NEVER = policy({"content": "never"})


def captured(
    *,
    confidence: float | None = 0.4,
    policy: LoadedPolicy = KEPT,
    failed: bool = False,
    request_id: str = "r1",
    purpose: Purpose = Purpose.INTERACTIVE,
) -> Captured:
    output = None if failed else {"label": "billing", "confidence": confidence, "scores": {}}
    return Captured(
        actor="user:u1",
        task="classify",
        policy=policy,
        text="Invoice for <PERSON_1> is late.",
        params={"labels": ["billing", "meeting"]},
        output=output,
        receipt={"audit_id": "a1", "entities": {"PERSON": 1}},
        audit_id="a1",
        request_id=request_id,
        model="smollm2-135m",
        tier="small",
        failed=failed,
        purpose=purpose,
    )


def item(engine: Engine, item_id: str) -> ReviewItem:
    with session_scope(engine) as session:
        row = session.get(ReviewItem, item_id)
        assert row is not None
        return row


@pytest.mark.parametrize(
    ("confidence", "failed", "reason"),
    [
        (0.4, False, "low_confidence"),
        (0.59, False, "low_confidence"),
        (0.6, False, None),
        (0.95, False, None),
        (None, False, None),  # no confidence (summaries, answers): only failures are queued
        (None, True, "output_invalid"),
    ],
)
def test_what_is_queued(
    queue: ReviewQueue, confidence: float | None, failed: bool, reason: str | None
) -> None:
    assert queue.reason_for(captured(confidence=confidence, failed=failed))[0] == reason
    item_id = queue.offer_sync(captured(confidence=confidence, failed=failed))
    assert (item_id is not None) == (reason is not None)


def test_evaluation_traffic_is_never_queued(queue: ReviewQueue) -> None:
    low = captured(confidence=0.1, request_id="r-eval", purpose=Purpose.EVALUATION)
    assert queue.reason_for(low) == (None, None)
    assert queue.offer_sync(low) is None
    # The purpose decides, not the request id: an `eval:` id from anyone else is queued.
    for purpose in (Purpose.INTERACTIVE, Purpose.BATCH):
        other = captured(confidence=0.1, request_id="eval:run1:0:3", purpose=purpose)
        assert queue.offer_sync(other) is not None


def test_content_is_sealed_bound_to_its_row_and_expires(queue: ReviewQueue, engine: Engine) -> None:
    now = utcnow()
    first = queue.offer_sync(captured(), now=now)
    second = queue.offer_sync(captured(), now=now)
    assert first and second
    row = item(engine, first)
    assert row.content_kept and row.content_sealed is not None
    assert b"Invoice" not in row.content_sealed and b"billing" not in row.content_sealed
    assert row.expires_at is not None
    opened = queue.open_sync(first, actor="user:r", role="staff", now=now)
    assert opened["content"]["input"] == "Invoice for <PERSON_1> is late."
    assert opened["content"]["output"]["label"] == "billing"
    # A ciphertext copied onto another row does not open there.
    with session_scope(engine) as session:
        other = session.get(ReviewItem, second)
        assert other is not None
        other.content_sealed = row.content_sealed
        session.add(other)
    with pytest.raises(ValueError, match="does not authenticate"):
        queue.open_sync(second, actor="user:r", role="staff", now=now)
    # Past its retention the content is no longer shown, and the sweep wipes it.
    later = now + timedelta(days=3, seconds=1)
    expired = queue.open_sync(first, actor="user:r", role="staff", now=later)
    assert expired["content"] is None and expired["note"] == EXPIRED
    assert queue.sweep_sync(later) == 2
    assert item(engine, first).content_sealed is None
    assert queue.sweep_sync(later) == 0


def test_a_policy_without_retention_keeps_metadata_only(queue: ReviewQueue, engine: Engine) -> None:
    item_id = queue.offer_sync(captured(policy=NEVER))
    assert item_id is not None
    row = item(engine, item_id)
    assert not row.content_kept and row.content_sealed is None and row.expires_at is None
    assert row.input_digest == queue.digest("Invoice for <PERSON_1> is late.")
    assert row.input_chars == len("Invoice for <PERSON_1> is late.")
    opened = queue.open_sync(item_id, actor="user:r", role="staff")
    assert opened["content"] is None and opened["note"] == METADATA_ONLY
    with pytest.raises(InvalidInput):
        queue.correct_sync(item_id, actor="user:r", role="staff", expected="meeting")
    assert queue.accept_sync(item_id, actor="user:r", role="staff")["status"] == "accepted"
    with pytest.raises(InvalidInput, match="no content"):
        queue.add_to_golden_set_sync(item_id, set_name="s", actor="user:r", role="staff")


def test_decisions_are_audited_once_and_final(queue: ReviewQueue, engine: Engine) -> None:
    item_id = queue.offer_sync(captured())
    assert item_id is not None
    with pytest.raises(InvalidInput, match="accept or correct"):
        queue.add_to_golden_set_sync(item_id, set_name="s", actor="user:r", role="staff")
    summary = queue.correct_sync(item_id, actor="user:r", role="staff", expected={"label": "x"})
    assert summary["status"] == "corrected" and summary["reviewer"] == "user:r"
    with pytest.raises(Conflict):
        queue.accept_sync(item_id, actor="user:r", role="staff")
    with pytest.raises(NotFound):
        queue.accept_sync("nope", actor="user:r", role="staff")
    assert queue.open_sync(item_id, actor="user:r", role="staff")["content"]["expected"] == "x"
    assert queue.counts() == {"pending": 0, "accepted": 0, "corrected": 1}
    assert [i["id"] for i in queue.list_items(status="corrected")] == [item_id]
    assert queue.list_items() == []
    with pytest.raises(InvalidInput):
        queue.list_items(status="nonsense")
    with session_scope(engine) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()  # type: ignore[arg-type]
        actions = [(e.action, e.target, e.role) for e in events]
        text = repr([(e.details, e.outcome) for e in events])
    target = f"review:{item_id}"
    assert actions == [
        ("review.queued", target, None),
        ("review.corrected", target, "staff"),
        ("review.opened", target, "staff"),
    ]
    assert "Invoice" not in text and "PERSON_1" not in text


@pytest.mark.parametrize(
    ("task", "value", "expected"),
    [
        ("classify", " billing ", "billing"),
        ("classify", {"label": "meeting"}, "meeting"),
        ("extract", {"amount": "40"}, {"amount": "40"}),
    ],
)
def test_corrections_accepted(task: str, value: Any, expected: Any) -> None:
    assert check_expected(task, value) == expected


@pytest.mark.parametrize(
    ("task", "value"),
    [("classify", ""), ("classify", 3), ("classify", "x" * 201), ("extract", {}), ("extract", "a")],
)
def test_corrections_refused(task: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_expected(task, value)
    assert caught.value.field == "expected"


def test_swept_ciphertext_leaves_no_copy_in_the_sqlite_files(
    queue: ReviewQueue, engine: Engine
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL: the table is vacuumed; its files are the server's")
    now = utcnow()
    item_id = queue.offer_sync(captured(), now=now)
    assert item_id is not None
    sealed = item(engine, item_id).content_sealed
    assert sealed is not None
    probe = sealed[12:44]  # a slice of the ciphertext itself
    path = Path(str(engine.url.database))

    def files() -> bytes:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))

    assert probe in files()
    assert queue.sweep_sync(now + timedelta(days=3, seconds=1)) == 1
    assert probe not in files()
