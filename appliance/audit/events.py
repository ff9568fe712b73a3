"""Typed audit events: one dataclass per event, each with a dotted name and a docstring.

Every row of the audit trail names one of these events in its `action` column. Callers either
build an event and call `.record()`, or write an `AuditRecord` whose `action` is a dotted name
listed here; an unknown name is refused (`ValueError`) so that a typo cannot create an event
class nobody documents. The README's "Audit events" table lists every name (a test checks it).

The request path's generic `chat.completion` rows are mapped onto the completion events by
their outcome (`typed_action`), so the gateway keeps one way of writing its row.

No field holds request, document or answer text: ids, names, counts and decisions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

Scalar = str | int | bool | None
"""The only values an event's `details` may hold (no floats: their text form is not canonical)."""


@dataclass(frozen=True)
class AuditRecord:
    """What one audit row says. There is deliberately no field for request or answer text."""

    actor: str
    action: str
    outcome: str
    source: str | None = None
    policy: str | None = None
    entity_counts: Mapping[str, int] = field(default_factory=dict)
    model: str | None = None
    request_id: str | None = None
    status_code: int | None = None
    role: str | None = None
    target: str | None = None
    tier: str | None = None
    details: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: who did it, from where, to what, with which result."""

    name: ClassVar[str] = ""
    default_outcome: ClassVar[str] = "ok"

    actor: str
    role: str | None = None
    source: str | None = None
    target: str | None = None
    outcome: str | None = None
    request_id: str | None = None
    status_code: int | None = None
    details: Mapping[str, Scalar] = field(default_factory=dict)

    def record(self) -> AuditRecord:
        """The row this event becomes."""
        return AuditRecord(
            actor=self.actor,
            action=self.name,
            outcome=self.outcome or self.default_outcome,
            source=self.source,
            role=self.role,
            target=self.target,
            request_id=self.request_id,
            status_code=self.status_code,
            details=dict(self.details),
        )


@dataclass(frozen=True, kw_only=True)
class CompletionEvent(Event):
    """Base of events about one request through the gateway: policy, counts, model, tier."""

    policy: str | None = None
    entity_counts: Mapping[str, int] = field(default_factory=dict)
    model: str | None = None
    tier: str | None = None

    def record(self) -> AuditRecord:
        """The row this event becomes, with the request path's fields."""
        return replace(
            super().record(),
            policy=self.policy,
            entity_counts=dict(self.entity_counts),
            model=self.model,
            tier=self.tier,
        )


# --- identity -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AuthLogin(Event):
    """A user signed in (local password or OIDC); `target` is the session id."""

    name = "auth.login"


@dataclass(frozen=True, kw_only=True)
class AuthLoginFailed(Event):
    """A sign-in attempt failed; `actor` is the claimed username, `outcome` the reason."""

    name = "auth.login_failed"
    default_outcome = "failed"


@dataclass(frozen=True, kw_only=True)
class AuthLogout(Event):
    """A user signed out; `target` is the ended session."""

    name = "auth.logout"


@dataclass(frozen=True, kw_only=True)
class SessionRevoked(Event):
    """A session was ended by an administrator or by policy; `target` is the session id."""

    name = "session.revoked"


@dataclass(frozen=True, kw_only=True)
class ApiKeyCreated(Event):
    """An API key was issued; `target` is the key id (never the key itself)."""

    name = "apikey.created"


@dataclass(frozen=True, kw_only=True)
class ApiKeyRevoked(Event):
    """An API key was revoked; `target` is the key id."""

    name = "apikey.revoked"


@dataclass(frozen=True, kw_only=True)
class ApiKeyDenied(Event):
    """A request presented an unknown, revoked or expired API key, or one lacking the scope."""

    name = "apikey.denied"
    default_outcome = "denied"


@dataclass(frozen=True, kw_only=True)
class AuthThrottled(Event):
    """Failed API-key authentications from one address went past the throttle: every refusal
    of one window is counted in a single row per address (`details.count`, `details.window_s`),
    so a flood of bad keys cannot grow the trail without bound."""

    name = "auth.throttled"
    default_outcome = "throttled"


@dataclass(frozen=True, kw_only=True)
class UserCreated(Event):
    """A local account was created; `target` is the user id."""

    name = "user.created"


@dataclass(frozen=True, kw_only=True)
class UserPasswordChanged(Event):
    """A local account's password was changed or reset; `target` is the user id."""

    name = "user.password_changed"


@dataclass(frozen=True, kw_only=True)
class UserRoleChanged(Event):
    """A user's role changed; `target` is the user id, `details` the old and new role."""

    name = "user.role_changed"


@dataclass(frozen=True, kw_only=True)
class UserDisabled(Event):
    """A user account was disabled; `target` is the user id."""

    name = "user.disabled"


@dataclass(frozen=True, kw_only=True)
class TeamChange(Event):
    """Base of the team changes: the new and the previous team (None: no team)."""

    team: str | None = None
    previous: str | None = None

    def record(self) -> AuditRecord:
        """The row this event becomes, the teams in `details`."""
        record = super().record()
        return replace(
            record, details={**record.details, "team": self.team, "previous": self.previous}
        )


@dataclass(frozen=True, kw_only=True)
class UserTeamChanged(TeamChange):
    """A user's team changed (an admin, or single sign-on from the team claim); `target` is
    the user id, `details` the new and the previous team."""

    name = "user.team_changed"


@dataclass(frozen=True, kw_only=True)
class ApiKeyTeamChanged(TeamChange):
    """An API key's own team changed (None: its owner's team applies); `target` is the key
    id, `details` the new and the previous team."""

    name = "apikey.team_changed"


# --- policies -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyEvent(Event):
    """Base of events about a policy change: `policy` is the `name@version` concerned."""

    policy: str | None = None

    def record(self) -> AuditRecord:
        """The row this event becomes, with the policy's `name@version`."""
        return replace(super().record(), policy=self.policy)


@dataclass(frozen=True, kw_only=True)
class PolicyCreated(PolicyEvent):
    """A new policy version was saved (not active yet); `target` and `policy` are
    `name@version`, `details.number` the version's number."""

    name = "policy.created"


@dataclass(frozen=True, kw_only=True)
class PolicyActivated(PolicyEvent):
    """A policy version became the active one; `target` and `policy` are `name@version`,
    `details` its number and the version active before (`previous`)."""

    name = "policy.activated"


@dataclass(frozen=True, kw_only=True)
class PolicyRolledBack(PolicyEvent):
    """The active policy was set back to an earlier version; `target` and `policy` are
    `name@version` (the version now active), `details` its number and `previous`."""

    name = "policy.rolled_back"


@dataclass(frozen=True, kw_only=True)
class PolicyAssigned(PolicyEvent):
    """A policy was assigned to an API key, a team or a task; `target` is `apikey:<id>`,
    `team:<name>` or `task:<name>`, `policy` the assigned `name@version`, `details` the kind,
    the assignee and the other policies requests under it may name (`allowed`)."""

    name = "policy.assigned"


@dataclass(frozen=True, kw_only=True)
class PolicyUnassigned(PolicyEvent):
    """The policy assignment of an API key, a team or a task was removed; `target` as for
    `policy.assigned`; requests there fall back to the next assignment or the default."""

    name = "policy.unassigned"


# --- the request path -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CompletionAllowed(CompletionEvent):
    """A request was answered and the policy changed nothing in it."""

    name = "completion.allowed"
    default_outcome = "allowed"


@dataclass(frozen=True, kw_only=True)
class CompletionRedacted(CompletionEvent):
    """A request was answered after identifiers were replaced (redact, mask, hash, pseudonym)."""

    name = "completion.redacted"
    default_outcome = "redacted"


@dataclass(frozen=True, kw_only=True)
class CompletionBlocked(CompletionEvent):
    """A `block` rule matched: the request was refused and nothing was sent to a model."""

    name = "completion.blocked"
    default_outcome = "blocked"


@dataclass(frozen=True, kw_only=True)
class CompletionEscalated(CompletionEvent):
    """A request was routed to a larger or external tier; `tier` says which."""

    name = "completion.escalated"
    default_outcome = "escalated"


@dataclass(frozen=True, kw_only=True)
class CompletionRejected(CompletionEvent):
    """A request was refused as invalid (a bad field, unknown model, body too large)."""

    name = "completion.rejected"
    default_outcome = "invalid_input"


@dataclass(frozen=True, kw_only=True)
class CompletionFailed(CompletionEvent):
    """A request could not be answered (model busy, unavailable or failed, internal error)."""

    name = "completion.failed"
    default_outcome = "inference_failed"


@dataclass(frozen=True, kw_only=True)
class CompletionCancelled(CompletionEvent):
    """The caller went away before the answer was complete (a stream was closed)."""

    name = "completion.cancelled"
    default_outcome = "cancelled"


@dataclass(frozen=True, kw_only=True)
class PiiDetectorFailed(CompletionEvent):
    """PII detection failed, timed out or was not loaded: the request failed closed."""

    name = "pii.detector_failed"
    default_outcome = "detector_unavailable"


@dataclass(frozen=True, kw_only=True)
class PiiAnalyzed(CompletionEvent):
    """A text was analysed under a policy without a model (`/api/v1/pii/analyze`, the
    workspace preview); `entity_counts` count what the policy acts on."""

    name = "pii.analyzed"
    default_outcome = "analyzed"


@dataclass(frozen=True, kw_only=True)
class PiiRedacted(CompletionEvent):
    """A policy's actions were applied to a text without a model (`/api/v1/pii/redact`);
    `outcome` is redacted, allowed, or blocked (422: nothing was released)."""

    name = "pii.redacted"
    default_outcome = "redacted"


@dataclass(frozen=True, kw_only=True)
class ExternalRefused(CompletionEvent):
    """Sending to an external tier was refused (policy forbids it, or text not pseudonymized)."""

    name = "external.refused"
    default_outcome = "refused"


@dataclass(frozen=True, kw_only=True)
class PolicyNotAllowed(CompletionEvent):
    """A request named a policy that its caller's assignment (key, team, task) does not allow:
    refused with 403 before any detection; `policy` is the floor the caller runs under."""

    name = "policy.not_allowed"
    default_outcome = "policy_not_allowed"


@dataclass(frozen=True, kw_only=True)
class RequestRefused(Event):
    """A request other than chat was refused or failed and no other event records it (not
    signed in, forbidden, not found, bad body, too large, rate limited); `target` is the route,
    `outcome` the error code. Anonymous refusals past the flood limit are one row per address
    and minute with their `details.count`."""

    name = "request.refused"
    default_outcome = "invalid_input"


# --- documents ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DocumentUploaded(Event):
    """A document was stored (encrypted at rest); `target` is its id, `details` size and type."""

    name = "document.uploaded"


@dataclass(frozen=True, kw_only=True)
class DocumentDeleted(Event):
    """A stored document was deleted by a user; `target` is its id."""

    name = "document.deleted"


@dataclass(frozen=True, kw_only=True)
class DocumentExpired(Event):
    """A stored document reached its retention limit and was removed; `target` is its id."""

    name = "document.expired"


# --- review queue and escalation budget -----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReviewEvent(Event):
    """Base of events about a review item: the request's policy and model ride along."""

    policy: str | None = None
    model: str | None = None

    def record(self) -> AuditRecord:
        """The row this event becomes, with the item's policy and model."""
        return replace(super().record(), policy=self.policy, model=self.model)


@dataclass(frozen=True, kw_only=True)
class ReviewQueued(ReviewEvent):
    """A task output was queued for review; `target` is the item, `outcome` the reason."""

    name = "review.queued"


@dataclass(frozen=True, kw_only=True)
class ReviewOpened(ReviewEvent):
    """A reviewer opened a queued item; `details` say whether content was shown."""

    name = "review.opened"


@dataclass(frozen=True, kw_only=True)
class ReviewAccepted(ReviewEvent):
    """A reviewer accepted a queued output as right; `target` is the item."""

    name = "review.accepted"


@dataclass(frozen=True, kw_only=True)
class ReviewCorrected(ReviewEvent):
    """A reviewer recorded the right output for a queued item; `target` is the item."""

    name = "review.corrected"


@dataclass(frozen=True, kw_only=True)
class ReviewGoldenAdded(ReviewEvent):
    """A reviewed item was appended to a golden set; `details` name the set and its version."""

    name = "review.golden_added"


@dataclass(frozen=True, kw_only=True)
class UserReviewerChanged(Event):
    """A user's reviewer permission was granted or withdrawn; `outcome` is `granted`/`revoked`."""

    name = "user.reviewer_changed"


@dataclass(frozen=True, kw_only=True)
class BudgetChanged(Event):
    """An admin set the monthly escalation budget; `details` hold the old and new cap (cents)."""

    name = "budget.changed"


# --- evaluation workbench ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EvalSetUploaded(Event):
    """A golden set was created, replaced or appended to; `details` hold task, version, items and
    the content's SHA-256 (never the content)."""

    name = "eval.set_uploaded"


@dataclass(frozen=True, kw_only=True)
class EvalRunStarted(Event):
    """An evaluation run was started; `target` is the run, `details` the set, version, models."""

    name = "eval.run_started"


@dataclass(frozen=True, kw_only=True)
class EvalRunFinished(Event):
    """An evaluation run finished (`outcome` completed or failed) with item counts."""

    name = "eval.run_finished"


@dataclass(frozen=True, kw_only=True)
class EvalApplied(Event):
    """An admin applied a recommendation to routing: task, default model, threshold, run."""

    name = "eval.applied"


# --- models and history ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelEvent(Event):
    """Base of events about a model on a backend: `model` names it."""

    model: str | None = None

    def record(self) -> AuditRecord:
        """The row this event becomes, with the model's name."""
        return replace(super().record(), model=self.model)


@dataclass(frozen=True, kw_only=True)
class ModelPullStarted(ModelEvent):
    """An admin started pulling a model on an Ollama backend; `target` is `backend:model`."""

    name = "model.pull_started"


@dataclass(frozen=True, kw_only=True)
class ModelPulled(ModelEvent):
    """A model pull ended; `outcome` is `ok` or the error code, `details` the pull id and bytes."""

    name = "model.pulled"


@dataclass(frozen=True, kw_only=True)
class HistoryDeleted(Event):
    """A user deleted the retained content of one of their own requests; `target` is its id."""

    name = "history.deleted"


@dataclass(frozen=True, kw_only=True)
class HistoryExpired(Event):
    """Retained request content reached the policy's retention limit and was removed."""

    name = "history.expired"


# --- the audit trail itself -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AuditExported(Event):
    """The trail was exported; `details` hold the format, filters and the last sequence number."""

    name = "audit.exported"


@dataclass(frozen=True, kw_only=True)
class AuditVerified(Event):
    """The chain was verified; `outcome` is `ok` or `failed`, `details` the first bad sequence."""

    name = "audit.verified"


@dataclass(frozen=True, kw_only=True)
class AuditPurged(Event):
    """Events older than the retention period were removed behind a signed anchor checkpoint."""

    name = "audit.purged"


# --- requests without an event of their own ------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RequestServed(Event):
    """A request was answered that no other event records (a page, a list, a status, a read);
    `target` is the route template and a keyed hash of its parameters, `details` the method."""

    name = "request.served"


def _all_events() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    pending: list[type[Event]] = [Event]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.name:
            if cls.name in found and found[cls.name] is not cls:
                raise RuntimeError(f"audit event name '{cls.name}' is defined twice")
            found[cls.name] = cls
    return dict(sorted(found.items()))


EVENTS: dict[str, type[Event]] = _all_events()
"""Every event class by its dotted name."""

GENERIC_COMPLETION = "chat.completion"
GENERIC_REFUSAL = "api.request"

_BY_OUTCOME = {
    "allowed": "completion.allowed",
    "redacted": "completion.redacted",
    "blocked": "completion.blocked",
    "pii_blocked": "completion.blocked",
    "escalated": "completion.escalated",
    "cancelled": "completion.cancelled",
    "detector_unavailable": "pii.detector_failed",
    "external_refused": "external.refused",
    "escalation_budget_exhausted": "external.refused",
    "policy_not_allowed": "policy.not_allowed",
}


def typed_action(action: str, outcome: str, status_code: int | None = None) -> str:
    """The dotted event name a record is stored under; `ValueError` for an unknown name.

    `chat.completion` (what the request path writes) becomes a completion event chosen by the
    outcome; other outcomes are `completion.rejected` for 4xx and `completion.failed` otherwise.
    """
    if action in EVENTS:
        return action
    if action == GENERIC_COMPLETION:
        if outcome in _BY_OUTCOME:
            return _BY_OUTCOME[outcome]
        if status_code is not None and 400 <= status_code < 500:
            return "completion.rejected"
        return "completion.failed"
    if action == GENERIC_REFUSAL:
        return "policy.not_allowed" if outcome == "policy_not_allowed" else "request.refused"
    raise ValueError(
        f"unknown audit event '{action}': add a class to appliance/audit/events.py "
        f"(and a row to the README's audit events table); known: {', '.join(EVENTS)}"
    )
