"""The one path every request takes: policy, PII detection, actions, model, audit, receipt.

The REST API, the UI and the compatible endpoints are thin adapters over `Gateway`; none of them
repeats a step. Text that reaches a backend has been through the policy's actions; text that
reaches the audit trail or a log is never raw: only counts, names and decisions.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal, TypeVar

import anyio

from appliance.audit.store import AuditLog
from appliance.auth.actor import Actor, Purpose
from appliance.errors import (
    ApplianceError,
    DetectorUnavailable,
    InvalidInput,
    OutputInvalid,
    PiiBlocked,
)
from appliance.gateway.routing import RoutingSteps
from appliance.gateway.types import (
    _OWN_EVENT_OUTCOMES,
    CHAT_ACTION,
    PII_ANALYZED,
    PII_REDACTED,
    ChatInput,
    ChatResult,
    ChatStream,
    DetectorHandle,
    DocumentTexts,
    EmbeddingResult,
    HistoryIntake,
    ReviewIntake,
    Trace,
    usage_dict,
)
from appliance.inference.base import (
    Delta,
    Embedder,
    Generation,
    GenerationRequest,
    Message,
    ModelInfo,
    Usage,
)
from appliance.inference.registry import Registry
from appliance.inference.router import Route, estimate_tokens
from appliance.metrics import PII_ANALYSIS, generation_done
from appliance.pii.actions import ActionContext, PlaceholderBook, Transformed, transform
from appliance.pii.detector import DetectionSpec, Finding
from appliance.pii.stream import StreamScanner
from appliance.pii.vault import PseudonymScope, PseudonymVault
from appliance.policies.resolve import resolve_policy
from appliance.policies.schema import LoadedPolicy
from appliance.policies.store import PolicyStore
from appliance.tasks.caller_text import replace_strings, strings_in
from appliance.tasks.schema_limits import check_schema
from appliance.tasks.types import TaskInput, TaskResult

T = TypeVar("T")
Kept = tuple[str, dict[str, Any], Any]
"""What a finished request offers its user's history: the text, the parameters, the output."""
log = logging.getLogger(__name__)


class Gateway:
    """Runs the request path. One instance per app, shared by every adapter."""

    def __init__(
        self,
        *,
        policies: PolicyStore,
        detector: DetectorHandle,
        registry: Registry,
        audit: AuditLog,
        vault: PseudonymVault,
        hash_key: bytes,
        default_model: str,
        max_tokens: int,
        max_tokens_limit: int = 2048,
        detector_timeout_s: float,
        routing: RoutingSteps | None = None,
        documents: DocumentTexts | None = None,
        review: ReviewIntake | None = None,
        history: HistoryIntake | None = None,
        requestable_policies: tuple[str, ...] = ("*",),
    ) -> None:
        # Router, escalation, usage and tasks; without it, a plain registry with no tiers.
        self.routing = routing or RoutingSteps.plain(registry, default_model=default_model)
        self.policies = policies
        self.detector = detector
        self.registry = registry
        self.audit = audit
        self.vault = vault
        self.hash_key = hash_key
        self.default_model = default_model
        self.max_tokens = max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.detector_timeout_s = detector_timeout_s
        self._specs: dict[tuple[str, str], DetectionSpec] = {}
        # The document store; without it, tasks refuse `document_id`.
        self.documents = documents
        # The review queue task outputs are offered to after the answer.
        self.review = review
        # The history that keeps content where the policy retains it.
        self.history = history
        # Policies a caller with no assignment may name (`*`: any), from the settings.
        self.requestable_policies = requestable_policies

    # -- PII steps, shared by every adapter -------------------------------------------------------
    def spec(self, policy: LoadedPolicy, direction: Literal["input", "output"]) -> DetectionSpec:
        """The detection spec of a policy version (built once: it compiles recognizers)."""
        key = (policy.ref, direction)
        if key not in self._specs:
            self._specs[key] = DetectionSpec.for_policy(policy.policy, direction)
        return self._specs[key]

    async def detect(self, text: str, spec: DetectionSpec) -> list[Finding]:
        """Findings in `text`; any failure or timeout fails closed (DetectorUnavailable)."""
        if not spec.entities:
            return []  # the policy has no rule this way: nothing found could be acted on
        detector = self.detector.get()
        return await self._analysis(lambda: detector.analyze(text, spec))

    async def detect_many(self, texts: list[str], spec: DetectionSpec) -> list[list[Finding]]:
        """Findings per text of one conversation, values split across two texts included;
        fails closed like `detect`."""
        if not spec.entities:
            return [[] for _ in texts]  # as in `detect`
        detector = self.detector.get()
        return await self._analysis(lambda: detector.analyze_many(texts, spec))

    async def _analysis(self, run: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.detector_timeout_s):
                # Abandoned on timeout: the analysis thread finishes on its own, unused.
                return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
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
        finally:
            PII_ANALYSIS.observe(time.perf_counter() - started)

    def action_context(
        self,
        policy: LoadedPolicy,
        *,
        request_id: str,
        actor: Actor | None = None,
        conversation_id: str | None = None,
    ) -> tuple[ActionContext, PseudonymScope | None]:
        """Placeholders, hash key and (if the policy pseudonymizes) the vault scope."""
        scope = None
        if any(rule.action == "pseudonymize" for rule in policy.policy.entities):
            rules = policy.policy.pseudonyms
            if rules.scope == "conversation" and conversation_id and actor is not None:
                name = f"conv:{actor.id}:{conversation_id}"
            else:
                # Bound to the caller too: a request id can be chosen (`X-Request-Id`), and
                # another caller reusing one must not restore this caller's values.
                name = f"req:{actor.id if actor is not None else '-'}:{request_id}"
            scope = self.vault.scope(name, ttl=timedelta(minutes=rules.ttl_minutes))
        return ActionContext(PlaceholderBook(), self.hash_key, scope), scope

    async def protect(
        self,
        text: str,
        policy: LoadedPolicy,
        context: ActionContext,
        direction: Literal["input", "output"] = "input",
    ) -> Transformed:
        """Detect and apply the policy's actions to one text (the vault runs off the loop)."""
        findings = await self.detect(text, self.spec(policy, direction))
        return await anyio.to_thread.run_sync(
            lambda: transform(text, findings, policy.policy, context, direction)
        )

    async def _prepare(
        self,
        trace: Trace,
        chat: ChatInput,
        *,
        policy: LoadedPolicy | None = None,
        params: dict[str, Any] | None = None,
    ) -> GenerationRequest:
        """Everything before the model: policy, model lookup, detection, actions, block.

        Every caller string is protected: the messages, a task's `params` (kept in
        `trace.params`) and the structured-output schema (`chat.json_schema`)."""
        if chat.json_schema is not None:
            check_schema(chat.json_schema, field="json_schema")
        trace.policy = policy or self.requested_policy(trace.actor, None, task=chat.task)
        trace.route = await self.routing.decide_async(trace.policy, chat)
        trace.model = trace.route.model
        trace.context, trace.scope = self.action_context(
            trace.policy,
            request_id=trace.request_id,
            actor=trace.actor,
            conversation_id=chat.conversation_id,
        )
        outgoing: list[Message] = []
        # The messages are read as one conversation: a value split across two of them (an SSN
        # in two halves) is found in both.
        texts = [message.content for message in chat.messages]
        found = await self.detect_many(texts, self.spec(trace.policy, "input"))
        policy, context = trace.policy, trace.context

        def act() -> list[Transformed]:
            return [
                transform(text, hits, policy.policy, context, "input")
                for text, hits in zip(texts, found, strict=True)
            ]

        # With nothing found there is nothing to replace and no vault to reach: no thread.
        results = await anyio.to_thread.run_sync(act) if any(found) else act()
        for message, transformed in zip(chat.messages, results, strict=True):
            trace.note(transformed, "input")
            outgoing.append(Message(role=message.role, content=transformed.text))
        blocked_field = "messages" if "block" in trace.actions.values() else None
        fields = {"params": params or {}, "json_schema": chat.json_schema}
        protected, blocked_in = await self._protect_fields(trace, fields)
        trace.params = protected["params"]
        if "block" in trace.actions.values():
            blocked = sorted(e for e, a in trace.actions.items() if a == "block")
            raise PiiBlocked(
                f"the policy '{trace.policy.policy.name}' blocks requests containing "
                f"{', '.join(blocked)}; nothing was sent to a model",
                field=blocked_field or blocked_in or "messages",
            )
        request = GenerationRequest(
            model=trace.route.model,
            messages=outgoing,
            max_tokens=min(chat.max_tokens or self.max_tokens, self.max_tokens_limit),
            temperature=chat.temperature,
            json_schema=protected["json_schema"],
        )
        # Route checks that need the protected text: context fit, router verdict, external rule.
        request = await self.routing.after_protect(trace, chat, request)
        trace.model = trace.route.model
        return request

    async def _protect_fields(
        self, trace: Trace, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """Structured fields (task params, a JSON schema) with every caller string in them,
        keys included, put through the policy's actions: one detection pass over all of them,
        each finding counted in the receipt like message text. Returns the fields with the
        strings replaced, and the name of the first field where a `block` rule fired."""
        assert trace.policy is not None and trace.context is not None
        found = {name: sorted(set(strings_in(value))) for name, value in fields.items()}
        texts = sorted({text for names in found.values() for text in names})
        if not texts:
            return fields, None
        policy, context = trace.policy, trace.context
        # One analysis of all strings joined by blank lines; findings are cut back per string.
        starts, cursor = [], 0
        for text in texts:
            starts.append(cursor)
            cursor += len(text) + 2
        findings = await self.detect("\n\n".join(texts), self.spec(policy, "input"))
        per: list[list[Finding]] = [[] for _ in texts]
        for finding in findings:
            index = bisect.bisect_right(starts, finding.start) - 1
            start, end = starts[index], starts[index] + len(texts[index])
            if finding.start >= end:
                continue  # inside a separator
            per[index].append(
                replace(finding, start=finding.start - start, end=min(finding.end, end) - start)
            )
        results = await anyio.to_thread.run_sync(
            lambda: [
                transform(text, hits, policy.policy, context, "input")
                for text, hits in zip(texts, per, strict=True)
            ]
        )
        mapping: dict[str, str] = {}
        blocked: set[str] = set()
        for text, transformed in zip(texts, results, strict=True):
            trace.note(transformed, "input")
            mapping[text] = transformed.text
            if transformed.blocked:
                blocked.add(text)
        blocked_in = next((n for n, names in found.items() if blocked & set(names)), None)
        return {n: replace_strings(v, mapping) for n, v in fields.items()}, blocked_in

    async def _finish_output(self, trace: Trace, text: str) -> str:
        """Scan a whole answer with the policy's output rules, then restore pseudonyms."""
        assert trace.policy is not None and trace.context is not None
        rules = trace.policy.policy.output
        if rules.scan:
            transformed = await self.protect(text, trace.policy, trace.context, "output")
            trace.note(transformed, "output")
            if transformed.blocked:
                entities = ", ".join(sorted({a.finding.entity for a in transformed.blocked}))
                raise PiiBlocked(
                    f"the answer contained {entities}, which the policy "
                    f"'{trace.policy.policy.name}' blocks; the answer was withheld",
                    field="output",
                )
            text = transformed.text
        return await self._restore(trace, text)

    async def _restore(self, trace: Trace, text: str) -> str:
        assert trace.policy is not None
        if trace.scope is None or not trace.policy.policy.output.restore_pseudonyms:
            return text
        if trace.route is not None and trace.route.tier == "external":
            # An answer from an external tier keeps its placeholders (issue 15): the values are
            # restored only where the whole round trip stayed on the box.
            return text
        scope = trace.scope
        restored, counts = await anyio.to_thread.run_sync(lambda: scope.restore_counted(text))
        trace.restored += sum(counts.values())
        trace.restored_entities.update(counts)
        return restored

    def _stream_scanner(self, trace: Trace) -> StreamScanner | None:
        assert trace.policy is not None and trace.context is not None
        policy, context = trace.policy, trace.context
        if not policy.policy.output.scan:
            return None
        spec = self.spec(policy, "output")

        async def detect(text: str) -> list[Finding]:
            return await self.detect(text, spec)

        async def apply(text: str, findings: list[Finding]) -> str:
            transformed = await anyio.to_thread.run_sync(
                lambda: transform(text, findings, policy.policy, context, "output")
            )
            trace.note(transformed, "output")
            if transformed.blocked:
                raise PiiBlocked(
                    f"the answer contained an identifier the policy '{policy.policy.name}' "
                    "blocks; the rest of the answer was withheld",
                    field="output",
                )
            return await self._restore(trace, transformed.text)

        return StreamScanner(
            window=policy.policy.output.stream_window,
            detect=detect,
            apply=apply,
            recognizers=spec.recognizers,
        )

    # -- PII without a model ------------------------------------------------------------------
    async def analyze(
        self, actor: Actor, text: str, *, policy: str | None = None, request_id: str
    ) -> tuple[LoadedPolicy, list[tuple[Finding, str]], str]:
        """Findings in `text` under the named (or the caller's resolved) policy, with actions,
        and the id of the `pii.analyzed` audit row (committed before this returns)."""
        trace = Trace(actor=actor, request_id=request_id)
        started = time.perf_counter()
        try:
            loaded = trace.policy = self.requested_policy(actor, policy)
            findings = await self.detect(text, self.spec(loaded, "input"))
        except Exception as exc:
            await self._refuse(trace, exc, action=PII_ANALYZED)
            raise
        items: list[tuple[Finding, str]] = []
        for finding in findings:
            rule = loaded.policy.rule_for(finding.entity, "input")
            if rule is not None:
                items.append((finding, rule.action))
                trace.counts[finding.entity] += 1
        seconds = time.perf_counter() - started
        usage = self.routing.detection_row(
            trace, trace.audit_id, task="pii.analyze", seconds=seconds
        )
        audit_id = await self.audit.append(
            event_id=trace.audit_id,
            record=trace.record(outcome="analyzed", status=200, action=PII_ANALYZED),
            alongside=[usage] if usage is not None else (),
        )
        return loaded, items, audit_id

    async def redact(
        self, actor: Actor, text: str, *, policy: str | None = None, request_id: str
    ) -> dict[str, Any]:
        """The policy's input actions applied to `text`, as a document (no model involved).

        Audited as `pii.redacted` (counts only), a `block` finding included: its refusal is
        the policy's decision, recorded with outcome `blocked` before the 422 is sent.
        """
        trace = Trace(actor=actor, request_id=request_id)
        started = time.perf_counter()
        try:
            trace.policy = self.requested_policy(actor, policy)
            trace.context, trace.scope = self.action_context(
                trace.policy, request_id=request_id, actor=actor
            )
            transformed = await self.protect(text, trace.policy, trace.context)
        except Exception as exc:
            await self._refuse(trace, exc, action=PII_REDACTED)
            raise
        trace.note(transformed, "input")
        entities = [
            {
                "type": a.finding.entity,
                "start": a.finding.start,
                "end": a.finding.end,
                "score": round(a.finding.score, 3),
                "action": a.action,
            }
            for a in transformed.applied
        ]
        outcome = trace.outcome()
        seconds = time.perf_counter() - started
        usage = (
            None
            if transformed.blocked
            else self.routing.detection_row(
                trace, trace.audit_id, task="pii.redact", seconds=seconds
            )
        )
        audit_id = await self.audit.append(
            event_id=trace.audit_id,
            record=trace.record(
                outcome=outcome, status=422 if transformed.blocked else 200, action=PII_REDACTED
            ),
            alongside=[usage] if usage is not None else (),
        )
        if transformed.blocked:
            blocked = sorted({a.finding.entity for a in transformed.blocked})
            refusal = PiiBlocked(
                f"the policy '{trace.policy.policy.name}' blocks {', '.join(blocked)}; "
                "the text cannot be released",
                field="text",
                entities=entities,
                receipt=trace.receipt(audit_id, outcome=outcome),
            )
            # Read by the app's after_exception hook so the refusal is not audited twice.
            refusal.audited = True  # type: ignore[attr-defined]
            raise refusal
        return {"text": transformed.text, "entities": entities, "receipt": trace.receipt(audit_id)}

    def requested_policy(
        self, actor: Actor, name: str | None, *, task: str | None = None
    ) -> LoadedPolicy:
        """The policy `actor`'s request for `task` runs under when it names `name` (or none):
        `appliance.policies.resolve.resolve_policy` with this gateway's store and the
        `requestable_policies` setting (403 `policy_not_allowed` outside the caller's floor)."""
        return resolve_policy(
            self.policies,
            key_id=actor.key_id,
            key_policy=actor.key_policy,
            team=actor.team,
            task=task,
            requested=name,
            requestable=self.requestable_policies,
        )

    # -- chat ------------------------------------------------------------------------------------
    async def _refuse(self, trace: Trace, exc: BaseException, *, action: str = CHAT_ACTION) -> None:
        """Audit a request that failed, then let the error propagate.

        A policy the caller may not name and a detector that failed are their own events
        (`policy.not_allowed`, `pii.detector_failed`) whichever route the request came by.
        """
        if isinstance(exc, ApplianceError):
            outcome = "blocked" if isinstance(exc, PiiBlocked) else exc.code
            status = exc.status_code
        else:
            outcome, status = "internal_error", 500
        if outcome in _OWN_EVENT_OUTCOMES:
            action = CHAT_ACTION
        _count_generations(trace.generations)
        audit_id = await self.audit.append(
            event_id=trace.audit_id,
            record=trace.record(outcome=outcome, status=status, action=action),
        )
        # Read by the app's after_exception hook so the refusal is not audited twice.
        exc.audited = True  # type: ignore[attr-defined]
        if isinstance(exc, ApplianceError):
            exc.extra.setdefault("receipt", trace.receipt(audit_id, outcome=outcome))

    async def chat(self, actor: Actor, chat: ChatInput, *, request_id: str) -> ChatResult:
        """Run the path and return the whole answer; the audit row is committed first."""
        trace = Trace(actor=actor, request_id=request_id)
        try:
            request = await self._prepare(trace, chat)
            generation: Generation = await self.routing.generate(trace, request)
            trace.model = trace.route.model if trace.route else trace.model
            content = await self._finish_output(trace, generation.content)
        except Exception as exc:
            await self._refuse(trace, exc)
            raise
        kept: Kept | None = (chat.messages[-1].content, {}, content) if chat.messages else None
        audit_id, costs = await self._succeed(trace, task=chat.task or "chat", history=kept)
        return ChatResult(
            message=Message(role="assistant", content=content),
            receipt=trace.receipt(audit_id),
            usage=usage_dict(generation.usage)
            | {"finish_reason": generation.finish_reason}
            | costs,
        )

    async def chat_stream(self, actor: Actor, chat: ChatInput, *, request_id: str) -> ChatStream:
        """Run the path up to the first token, so refusals are still plain HTTP errors."""
        trace = Trace(actor=actor, request_id=request_id)
        try:
            request = await self._prepare(trace, chat)
            deltas, first = await self.routing.stream(trace, request)
        except StopAsyncIteration:
            first = Delta(content="", finish_reason="stop")
            deltas = _empty()
        except Exception as exc:
            await self._refuse(trace, exc)
            raise
        return ChatStream(
            events=self._events(trace, first, deltas, chat), receipt=trace.receipt(trace.audit_id)
        )

    async def _events(
        self,
        trace: Trace,
        first: Delta,
        deltas: AsyncIterator[Delta],
        chat: ChatInput | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        scanner = self._stream_scanner(trace)
        pieces: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        try:
            delta: Delta | None = first
            while delta is not None:
                if delta.content:
                    safe = await scanner.feed(delta.content) if scanner else delta.content
                    if scanner is None:
                        safe = await self._restore(trace, safe)
                    if safe:
                        pieces.append(safe)
                        yield "delta", {"content": safe}
                if delta.usage is not None:
                    usage, finish = delta.usage, delta.finish_reason
                delta = await anext(deltas, None)
            if scanner is not None:
                tail = await scanner.finish()
                if tail:
                    pieces.append(tail)
                    yield "delta", {"content": tail}
            if usage is not None:
                trace.generations.append(
                    Generation(
                        content="",
                        model=trace.model or "",
                        finish_reason=finish or "stop",
                        usage=usage,
                    )
                )
            kept: Kept | None = (
                (chat.messages[-1].content, {}, "".join(pieces))
                if chat is not None and chat.messages
                else None
            )
            audit_id, costs = await self._succeed(trace, task="chat", history=kept)
            yield (
                "done",
                {
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "receipt": trace.receipt(audit_id),
                    "usage": (usage_dict(usage) if usage else {})
                    | {"finish_reason": finish}
                    | costs,
                },
            )
        except ApplianceError as exc:
            # Whatever the scanner still holds is dropped: nothing leaves unscanned.
            outcome = "blocked" if isinstance(exc, PiiBlocked) else exc.code
            audit_id = await self.audit.append(
                event_id=trace.audit_id,
                record=trace.record(outcome=outcome, status=exc.status_code),
            )
            trace.audited = True
            yield (
                "error",
                exc.to_dict()["error"] | {"receipt": trace.receipt(audit_id, outcome=outcome)},
            )
        finally:
            if not trace.audited:
                # The caller went away (or an unexpected error): still one row per request.
                with anyio.CancelScope(shield=True):
                    await self.audit.append(
                        event_id=trace.audit_id,
                        record=trace.record(outcome="cancelled", status=499),
                    )
            await _aclose(deltas)

    # -- embeddings ------------------------------------------------------------------------------
    def can_embed(self, model: str) -> bool:
        """Whether `model` is an on-prem model whose backend computes embeddings."""
        backend, info = self.registry.resolve(model)
        return isinstance(backend, Embedder) and _embeds(backend, info)

    async def embed(
        self, actor: Actor, texts: list[str], *, model: str, request_id: str
    ) -> EmbeddingResult:
        """Embed `texts` through the same path: policy, PII actions on each input, then the
        model, audit and usage. Vectors are computed from the transformed text, so a redacted
        identifier never shapes a vector; on-prem models only (a vector can leak its text)."""
        trace = Trace(actor=actor, request_id=request_id, task="embeddings")
        try:
            backend, info = self.registry.resolve(model)
            trace.model = info.name
            trace.policy = self.requested_policy(actor, None)
            if not isinstance(backend, Embedder) or not _embeds(backend, info):
                capable = [m.name for m in self.registry.models() if self.can_embed(m.name)]
                raise InvalidInput(
                    f"model '{model}' cannot compute embeddings here; models that can: "
                    f"{', '.join(capable) or 'none'}",
                    field="model",
                )
            trace.route = Route(model=info.name, tier=info.tier, reason="embeddings: named model")
            trace.context, trace.scope = self.action_context(
                trace.policy, request_id=request_id, actor=actor
            )
            outgoing: list[str] = []
            for text in texts:
                transformed = await self.protect(text, trace.policy, trace.context)
                trace.note(transformed, "input")
                outgoing.append(transformed.text)
            if "block" in trace.actions.values():
                blocked = sorted(e for e, a in trace.actions.items() if a == "block")
                raise PiiBlocked(
                    f"the policy '{trace.policy.policy.name}' blocks requests containing "
                    f"{', '.join(blocked)}; nothing was sent to a model",
                    field="input",
                )
            started = time.perf_counter()
            vectors = await backend.embed(info.name, outgoing)
            elapsed = time.perf_counter() - started
        except Exception as exc:
            await self._refuse(trace, exc)
            raise
        prompt_tokens = sum(estimate_tokens(t) for t in outgoing)
        trace.generations.append(
            Generation(
                content="",
                model=info.name,
                finish_reason="embedded",
                usage=Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=0,
                    ttft_s=elapsed,
                    total_s=elapsed,
                ),
            )
        )
        audit_id, costs = await self._succeed(trace, task="embeddings")
        return EmbeddingResult(
            vectors=vectors,
            receipt=trace.receipt(audit_id),
            usage={
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens,
                "total_ms": round(elapsed * 1000, 1),
            }
            | costs,
        )

    # -- tasks -----------------------------------------------------------------------------------
    async def run_task(self, actor: Actor, task: TaskInput, *, request_id: str) -> TaskResult:
        """Run a task template through the same path: policy, PII, route, model, output, audit."""
        trace = Trace(actor=actor, request_id=request_id, task=task.name)
        protected: str | None = None
        params: dict[str, Any] = {}
        try:
            if task.document_id is not None and self.documents is not None:
                text = await self.documents.text_for(actor, task.document_id)
                task = replace(task, text=text, document_id=None)
            template, params, chat = self.routing.task_input(task, actor)
            policy = self.requested_policy(actor, task.policy, task=task.name)
            request = await self._prepare(trace, chat, policy=policy, params=params)
            protected = request.messages[0].content
            params = trace.params
            output = await self.routing.run_template(trace, template, params, request)
            for key in self.routing.text_fields(template, output):
                output[key] = await self._finish_output(trace, output[key])
        except Exception as exc:
            await self._refuse(trace, exc)
            if isinstance(exc, OutputInvalid) and protected is not None:
                receipt = exc.extra.get("receipt") or trace.receipt(trace.audit_id)
                await self._offer_review(trace, task.name, protected, params, None, receipt)
            raise
        kept: Kept | None = (task.text, task.params, output) if task.text is not None else None
        audit_id, usage = await self._succeed(trace, task=task.name, summary=True, history=kept)
        receipt = trace.receipt(audit_id)
        assert protected is not None
        await self._offer_review(trace, task.name, protected, params, output, receipt)
        return TaskResult(output=output, receipt=receipt, usage=usage)

    async def _succeed(
        self,
        trace: Trace,
        *,
        task: str,
        summary: bool = False,
        history: Kept | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The one success tail of every model request: its audit row (committed before the
        answer leaves), its usage row, and the history entry when the policy keeps content
        (`history` is the text, the parameters and the output). Returns the row's id and the
        costs for the answer's `usage`. The audit and usage rows are one transaction: both are
        committed, or neither is and the request fails."""
        usage, costs = self.routing.usage_row(trace, trace.audit_id, task=task, summary=summary)
        _count_generations(trace.generations)
        audit_id = await self.audit.append(
            event_id=trace.audit_id,
            record=trace.record(outcome=trace.outcome(), status=200),
            alongside=[usage] if usage is not None else (),
        )
        trace.audited = True
        if history is not None:
            await self._keep_history(trace, audit_id, task, *history)
        return audit_id, costs

    async def _keep_history(
        self,
        trace: Trace,
        audit_id: str,
        task: str,
        text: str,
        params: dict[str, Any],
        output: Any,
    ) -> None:
        """Offer the finished request to the user's history (it keeps content only where the
        policy retains it). The answer has been audited already, so a failure here is logged
        (without content) rather than turned into an error for an answered request."""
        if (
            self.history is None
            or trace.policy is None
            or trace.actor.purpose is Purpose.EVALUATION
        ):
            return
        try:
            await self.history.keep(
                actor=trace.actor.id,
                audit_id=audit_id,
                task=task,
                policy=trace.policy,
                text=text,
                params=params,
                output=output,
            )
        except Exception:
            log.error("history content could not be kept", extra={"detail": audit_id})

    async def _offer_review(
        self,
        trace: Trace,
        task: str,
        text: str,
        params: dict[str, Any],
        output: dict[str, Any] | None,
        receipt: dict[str, Any],
    ) -> None:
        """Offer a task's protected input and output to the review queue (it decides)."""
        if self.review is None or trace.policy is None:
            return
        await self.review.offer_task(
            actor=trace.actor.id,
            task=task,
            policy=trace.policy,
            text=text,
            params=params,
            output=dict(output) if output is not None else None,
            receipt=receipt,
            audit_id=receipt.get("audit_id"),
            request_id=trace.request_id,
            model=trace.model,
            tier=trace.route.tier if trace.route else None,
            failed=output is None,
            purpose=trace.actor.purpose,
        )


def _count_generations(generations: list[Generation]) -> None:
    """Each backend call of a finished request in `/metrics`: tokens, time, time to first token
    (embeddings and choice scoring stream no tokens, so they have none)."""
    for generation in generations:
        usage = generation.usage
        generation_done(
            generation.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=usage.total_s,
            ttft_s=None if generation.finish_reason in ("embedded", "scored") else usage.ttft_s,
        )


def _embeds(backend: object, info: ModelInfo) -> bool:
    """On-prem only: an embedding is derived from its text and may leak it."""
    capabilities = getattr(backend, "capabilities", None)
    return info.tier != "external" and bool(getattr(capabilities, "embeddings", False))


async def _empty() -> AsyncIterator[Delta]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _aclose(stream: AsyncIterator[Delta]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()
