"""What the request path hands around: inputs, results, the trace that becomes the audit row."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from appliance.audit.events import GENERIC_COMPLETION, PiiAnalyzed, PiiRedacted
from appliance.audit.store import AuditRecord
from appliance.auth.actor import Actor
from appliance.errors import DetectorUnavailable
from appliance.inference.base import Generation, Message, Usage
from appliance.inference.router import Route
from appliance.pii.actions import ActionContext, Transformed
from appliance.pii.detector import Detector
from appliance.pii.vault import PseudonymScope
from appliance.policies.schema import LoadedPolicy

CHAT_ACTION = GENERIC_COMPLETION
PII_ANALYZED = PiiAnalyzed.name
PII_REDACTED = PiiRedacted.name
_OWN_EVENT_OUTCOMES = frozenset({"policy_not_allowed", "detector_unavailable"})
"""Refusals recorded as their own event on every route (see `_refuse`)."""


class DocumentTexts(Protocol):
    """Where a task's `document_id` is turned into text: only the caller's own documents."""

    async def text_for(self, actor: Actor, document_id: str) -> str:
        """The decrypted text, or `NotFound` when the caller owns no such document."""
        ...


class ReviewIntake(Protocol):
    """Where finished tasks are offered for human review (`appliance.review.queue`)."""

    async def offer_task(self, **fields: Any) -> str | None:
        """Queue the task if it needs review (low confidence, failed validation)."""
        ...


class HistoryIntake(Protocol):
    """Where finished requests are offered for the user's history (`appliance.history.store`)."""

    async def keep(
        self,
        *,
        actor: str,
        audit_id: str,
        task: str,
        policy: LoadedPolicy,
        text: str,
        params: dict[str, Any],
        output: Any,
    ) -> bool:
        """Keep the content, sealed and expiring, if the request's policy retains content."""
        ...


@dataclass(frozen=True)
class ChatInput:
    """A chat request as the adapters hand it to the gateway."""

    messages: list[Message]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    task: str | None = None
    conversation_id: str | None = None
    """Scope for pseudonyms when the policy keeps them per conversation."""
    json_schema: dict[str, Any] | None = None
    """Constrain the answer to this JSON schema (structured output)."""


class DetectorHandle:
    """The detector as it loads in the background: loading, ready, or failed with a reason."""

    def __init__(self) -> None:
        self._detector: Detector | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def set_ready(self, detector: Detector) -> None:
        """Mark the detector loaded and warmed."""
        with self._lock:
            self._detector, self._error = detector, None

    def set_failed(self, reason: str) -> None:
        """Record why the detector could not load."""
        with self._lock:
            self._detector, self._error = None, reason

    @property
    def status(self) -> str:
        """`ready`, `loading` or `failed: <reason>`."""
        if self._detector is not None:
            return "ready"
        return f"failed: {self._error}" if self._error else "loading"

    def close(self) -> None:
        """Stop the detector's worker processes, if it has any (the app is shutting down)."""
        with self._lock:
            detector, self._detector = self._detector, None
            self._error = "the appliance is shutting down"
        close = getattr(detector, "close", None)
        if close is not None:
            close()

    def get(self) -> Detector:
        """The loaded detector; fails closed when it is not ready."""
        if self._detector is None:
            reason = self._error or "still loading"
            raise DetectorUnavailable(f"PII detection is unavailable ({reason}); nothing was sent")
        return self._detector


@dataclass
class Trace:
    """What the path has learnt so far; becomes the audit row and the receipt."""

    actor: Actor
    request_id: str
    policy: LoadedPolicy | None = None
    counts: Counter[str] = field(default_factory=Counter)
    actions: dict[str, str] = field(default_factory=dict)
    output_counts: Counter[str] = field(default_factory=Counter)
    output_actions: dict[str, str] = field(default_factory=dict)
    restored: int = 0
    restored_entities: Counter[str] = field(default_factory=Counter)
    """How many pseudonyms of each type were put back in the answer for the caller."""
    model: str | None = None
    context: ActionContext | None = None
    scope: PseudonymScope | None = None
    audit_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Chosen up front so that a stream can name its audit row in its first headers."""
    task: str | None = None
    route: Route | None = None
    generations: list[Generation] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    """A task's parameters after the policy's actions (what the model may see)."""
    audited: bool = False
    """Whether the request's audit row has been written (a stream writes one whatever ends it)."""

    def note(self, transformed: Transformed, direction: Literal["input", "output"]) -> None:
        counts, actions = (
            (self.counts, self.actions)
            if direction == "input"
            else (self.output_counts, self.output_actions)
        )
        for applied in transformed.applied:
            counts[applied.finding.entity] += 1
            actions[applied.finding.entity] = applied.action

    def outcome(self) -> str:
        actions = [*self.actions.values(), *self.output_actions.values()]
        if "block" in actions:
            return "blocked"
        if any(a != "allow" for a in actions):
            return "redacted"
        return "allowed"

    def record(self, *, outcome: str, status: int, action: str = CHAT_ACTION) -> AuditRecord:
        return AuditRecord(
            actor=self.actor.id,
            source=self.actor.source,
            action=action,
            outcome=outcome,
            policy=self.policy.ref if self.policy else None,
            entity_counts=dict(self.counts)
            | {f"output.{k}": v for k, v in self.output_counts.items()},
            model=self.model,
            request_id=self.request_id,
            status_code=status,
            tier=self.route.tier if self.route else None,
            details=self.route.audit_details(self.task) if self.route else {},
        )

    def receipt(self, audit_id: str | None, *, outcome: str | None = None) -> dict[str, Any]:
        return {
            "policy": (
                {"name": self.policy.policy.name, "version": self.policy.version}
                if self.policy
                else None
            ),
            "entities": dict(sorted(self.counts.items())),
            "actions": dict(sorted(self.actions.items())),
            "output": {
                "entities": dict(sorted(self.output_counts.items())),
                "actions": dict(sorted(self.output_actions.items())),
                "restored": self.restored,
                "restored_entities": dict(sorted(self.restored_entities.items())),
            },
            "outcome": outcome or self.outcome(),
            "model": self.model,
            "route": self.route.to_dict() if self.route else None,
            "audit_id": audit_id,
            "request_id": self.request_id,
        }


@dataclass(frozen=True)
class ChatResult:
    """A finished chat answer with its receipt and usage."""

    message: Message
    receipt: dict[str, Any]
    usage: dict[str, Any]


@dataclass(frozen=True)
class ChatStream:
    """A chat answer as events: `delta` events, then one `done` (or `error`) event."""

    events: AsyncIterator[tuple[str, dict[str, Any]]]
    receipt: dict[str, Any]
    """What is known before the first token: policy, input findings, model, audit id."""


@dataclass(frozen=True)
class EmbeddingResult:
    """Embedding vectors of the policy-transformed inputs, with the receipt and usage."""

    vectors: list[list[float]]
    receipt: dict[str, Any]
    usage: dict[str, Any]


def usage_dict(usage: Usage) -> dict[str, Any]:
    """Usage as the API reports it."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "ttft_ms": round(usage.ttft_s * 1000, 1),
        "total_ms": round(usage.total_s * 1000, 1),
        "tokens_per_s": round(usage.tokens_per_s, 1),
    }
