"""Typed events: every name documented, unknown names refused, the request path mapped."""

from __future__ import annotations

import re

import pytest

from appliance.audit.events import EVENTS, CompletionRedacted, Event, typed_action
from appliance.config import PROJECT_ROOT

REQUIRED = {
    "auth.login", "auth.login_failed", "auth.logout", "session.revoked", "apikey.created",
    "apikey.revoked", "apikey.denied", "policy.created", "policy.activated", "policy.rolled_back",
    "completion.allowed", "completion.redacted", "completion.blocked", "completion.escalated",
    "pii.detector_failed", "external.refused", "document.uploaded", "document.deleted",
    "document.expired", "user.role_changed", "user.disabled", "audit.exported", "audit.verified",
    "audit.purged",
}  # fmt: skip


def documented_events() -> set[str]:
    """The event names in the README's "Audit events" table."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("### Audit events", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\|\s*`([a-z_]+\.[a-z_]+)`\s*\|", section, re.MULTILINE))


def test_every_event_the_trail_needs_exists() -> None:
    assert set(EVENTS) >= REQUIRED


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_is_documented_in_the_readme(name: str) -> None:
    assert name in documented_events(), f"add `{name}` to the README's Audit events table"


def test_the_readme_lists_no_event_that_does_not_exist() -> None:
    assert documented_events() - set(EVENTS) == set()


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_class_has_a_dotted_name_and_a_docstring(name: str) -> None:
    cls = EVENTS[name]
    assert re.fullmatch(r"[a-z]+\.[a-z_]+", name)
    assert cls.__doc__ and cls.__doc__ != Event.__doc__


def test_an_unknown_event_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown audit event 'auth.logni'"):
        typed_action("auth.logni", "ok")


@pytest.mark.parametrize(
    ("outcome", "status", "expected"),
    [
        ("allowed", 200, "completion.allowed"),
        ("redacted", 200, "completion.redacted"),
        ("blocked", 422, "completion.blocked"),
        ("detector_unavailable", 503, "pii.detector_failed"),
        ("cancelled", 499, "completion.cancelled"),
        ("external_refused", 403, "external.refused"),
        ("invalid_input", 422, "completion.rejected"),
        ("model_not_found", 404, "completion.rejected"),
        ("backend_busy", 503, "completion.failed"),
        ("internal_error", 500, "completion.failed"),
    ],
)
def test_the_request_paths_generic_action_becomes_a_typed_event(
    outcome: str, status: int, expected: str
) -> None:
    assert typed_action("chat.completion", outcome, status) == expected


def test_an_event_becomes_a_record_with_its_name_and_fields() -> None:
    event = CompletionRedacted(
        actor="user:7",
        role="staff",
        source="10.0.0.9",
        policy="default@1",
        entity_counts={"PERSON": 2},
        model="smollm2-135m",
        tier="small",
        request_id="r1",
        status_code=200,
    )

    record = event.record()

    assert record.action == "completion.redacted"
    assert record.outcome == "redacted"
    assert (record.actor, record.role, record.tier) == ("user:7", "staff", "small")
    assert dict(record.entity_counts) == {"PERSON": 2}
