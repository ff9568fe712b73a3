"""The one path every request takes: policy, PII detection, actions, model, audit, receipt.

The REST API, the UI and the compatible endpoints are thin adapters over `Gateway`; none of them
repeats a step. Text that reaches a backend has been through the policy's actions; text that
reaches the audit trail or a log is never raw: only counts, names and decisions.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from appliance.audit.store import AuditLog, AuditRecord
from appliance.errors import (
    ApplianceError,
    DetectorUnavailable,
    PiiBlocked,
)
from appliance.inference.base import Delta, Generation, GenerationRequest, Message, Usage
from appliance.inference.registry import Registry
from appliance.pii.detector import Finding, PiiDetector
from appliance.pii.redact import PlaceholderBook, Transformed, transform
from appliance.policies.loader import PolicyStore
from appliance.policies.schema import LoadedPolicy

log = logging.getLogger(__name__)

CHAT_ACTION = "chat.completion"


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user or key id, their role, and the source address."""

    id: str
    role: str
    source: str | None = None


@dataclass(frozen=True)
class ChatInput:
    """A chat request as the adapters hand it to the gateway."""

    messages: list[Message]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0


class DetectorHandle:
    """The detector as it loads in the background: loading, ready, or failed with a reason."""

    def __init__(self) -> None:
        self._detector: PiiDetector | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def set_ready(self, detector: PiiDetector) -> None:
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

    def get(self) -> PiiDetector:
        """The loaded detector; fails closed when it is not ready."""
        if self._detector is None:
            reason = self._error or "still loading"
            raise DetectorUnavailable(f"PII detection is unavailable ({reason}); nothing was sent")
        return self._detector


@dataclass
class _Trace:
    """What the path has learnt so far; becomes the audit row and the receipt."""

    actor: Actor
    request_id: str
    policy: LoadedPolicy | None = None
    counts: Counter[str] = field(default_factory=Counter)
    actions: dict[str, str] = field(default_factory=dict)
    model: str | None = None

    def outcome(self) -> str:
        if any(a == "block" for a in self.actions.values()):
            return "blocked"
        if any(a == "redact" for a in self.actions.values()):
            return "redacted"
        return "allowed"

    def record(self, *, outcome: str, status: int) -> AuditRecord:
        return AuditRecord(
            actor=self.actor.id,
            source=self.actor.source,
            action=CHAT_ACTION,
            outcome=outcome,
            policy=self.policy.ref if self.policy else None,
            entity_counts=dict(self.counts),
            model=self.model,
            request_id=self.request_id,
            status_code=status,
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
            "outcome": outcome or self.outcome(),
            "model": self.model,
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


class Gateway:
    """Runs the request path. One instance per app, shared by every adapter."""

    def __init__(
        self,
        *,
        policies: PolicyStore,
        detector: DetectorHandle,
        registry: Registry,
        audit: AuditLog,
        default_model: str,
        max_tokens: int,
        detector_timeout_s: float,
    ) -> None:
        self.policies = policies
        self.detector = detector
        self.registry = registry
        self.audit = audit
        self.default_model = default_model
        self.max_tokens = max_tokens
        self.detector_timeout_s = detector_timeout_s

    async def _detect(self, text: str, policy: LoadedPolicy) -> list[Finding]:
        detector = self.detector.get()
        entities = [rule.entity for rule in policy.policy.entities]
        try:
            with anyio.fail_after(self.detector_timeout_s):
                # Abandoned on timeout: the analysis thread finishes on its own, unused.
                return await anyio.to_thread.run_sync(
                    lambda: detector.analyze(text, entities=entities), abandon_on_cancel=True
                )
        except TimeoutError as exc:
            raise DetectorUnavailable(
                f"PII detection timed out after {self.detector_timeout_s} s; nothing was sent"
            ) from exc
        except ApplianceError:
            raise
        except Exception as exc:
            log.error("PII analysis failed", exc_info=True)
            raise DetectorUnavailable(
                f"PII detection failed ({type(exc).__name__}); nothing was sent"
            ) from exc

    async def _prepare(self, trace: _Trace, chat: ChatInput) -> GenerationRequest:
        """Everything before the model: policy, model lookup, detection, actions, block."""
        trace.policy = self.policies.get()
        model = chat.model or self.default_model
        self.registry.resolve(model)
        trace.model = model
        book = PlaceholderBook()
        outgoing: list[Message] = []
        for message in chat.messages:
            findings = await self._detect(message.content, trace.policy)
            transformed: Transformed = transform(
                message.content, findings, trace.policy.policy, book
            )
            for applied in transformed.applied:
                trace.counts[applied.finding.entity] += 1
                trace.actions[applied.finding.entity] = applied.action
            outgoing.append(Message(role=message.role, content=transformed.text))
        if trace.outcome() == "blocked":
            blocked = sorted(e for e, a in trace.actions.items() if a == "block")
            raise PiiBlocked(
                f"the policy '{trace.policy.policy.name}' blocks requests containing "
                f"{', '.join(blocked)}; nothing was sent to a model",
                field="messages",
            )
        return GenerationRequest(
            model=model,
            messages=outgoing,
            max_tokens=chat.max_tokens or self.max_tokens,
            temperature=chat.temperature,
        )

    async def _refuse(self, trace: _Trace, exc: BaseException) -> None:
        """Audit a request that failed, then let the error propagate."""
        if isinstance(exc, ApplianceError):
            outcome = "blocked" if isinstance(exc, PiiBlocked) else exc.code
            status = exc.status_code
        else:
            outcome, status = "internal_error", 500
        audit_id = await self.audit.append(trace.record(outcome=outcome, status=status))
        # Read by the app's after_exception hook so the refusal is not audited twice.
        exc.audited = True  # type: ignore[attr-defined]
        if isinstance(exc, ApplianceError):
            exc.extra.setdefault("receipt", trace.receipt(audit_id, outcome=outcome))

    async def chat(self, actor: Actor, chat: ChatInput, *, request_id: str) -> ChatResult:
        """Run the path and return the whole answer; the audit row is committed first."""
        trace = _Trace(actor=actor, request_id=request_id)
        try:
            request = await self._prepare(trace, chat)
            backend, _ = self.registry.resolve(request.model)
            generation: Generation = await backend.generate(request)
        except Exception as exc:
            await self._refuse(trace, exc)
            raise
        audit_id = await self.audit.append(trace.record(outcome=trace.outcome(), status=200))
        return ChatResult(
            message=Message(role="assistant", content=generation.content),
            receipt=trace.receipt(audit_id),
            usage=usage_dict(generation.usage) | {"finish_reason": generation.finish_reason},
        )

    async def chat_stream(self, actor: Actor, chat: ChatInput, *, request_id: str) -> ChatStream:
        """Run the path up to the first token, so refusals are still plain HTTP errors."""
        trace = _Trace(actor=actor, request_id=request_id)
        try:
            request = await self._prepare(trace, chat)
            backend, _ = self.registry.resolve(request.model)
            deltas = backend.stream(request)
            first = await anext(deltas)
        except StopAsyncIteration:
            first = Delta(content="", finish_reason="stop")
            deltas = _empty()
        except Exception as exc:
            await self._refuse(trace, exc)
            raise
        return ChatStream(events=self._events(trace, first, deltas))

    async def _events(
        self, trace: _Trace, first: Delta, deltas: AsyncIterator[Delta]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        pieces: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        audited = False
        try:
            delta: Delta | None = first
            while delta is not None:
                if delta.content:
                    pieces.append(delta.content)
                    yield "delta", {"content": delta.content}
                if delta.usage is not None:
                    usage, finish = delta.usage, delta.finish_reason
                delta = await anext(deltas, None)
            audit_id = await self.audit.append(trace.record(outcome=trace.outcome(), status=200))
            audited = True
            yield (
                "done",
                {
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "receipt": trace.receipt(audit_id),
                    "usage": (usage_dict(usage) if usage else {}) | {"finish_reason": finish},
                },
            )
        except ApplianceError as exc:
            audit_id = await self.audit.append(
                trace.record(outcome=exc.code, status=exc.status_code)
            )
            audited = True
            yield (
                "error",
                exc.to_dict()["error"] | {"receipt": trace.receipt(audit_id, outcome=exc.code)},
            )
        finally:
            if not audited:
                # The caller went away (or an unexpected error): still one row per request.
                with anyio.CancelScope(shield=True):
                    await self.audit.append(trace.record(outcome="cancelled", status=499))
            await _aclose(deltas)


async def _empty() -> AsyncIterator[Delta]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _aclose(stream: AsyncIterator[Delta]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()
