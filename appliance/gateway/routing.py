"""The gateway's routing, escalation, task and usage steps.

The gateway calls these between its PII steps; nothing here detects or transforms text, and
nothing here is called by an adapter directly. Kept out of `gateway.py` so the path itself stays
readable: decide -> (PII) -> after_protect -> generate / run_template -> usage_row (committed
with the request's audit row).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from appliance.costs.budget import EscalationBudget
from appliance.costs.compute import CostModel
from appliance.costs.models import NO_MODEL, UsageRecord
from appliance.costs.prices import DEFAULT_PRICES, price_table
from appliance.costs.store import UsageLog, load_backend_rows
from appliance.db.engine import make_engine
from appliance.errors import (
    BackendUnavailable,
    EscalationBudgetExhausted,
    ExternalRefused,
    InvalidInput,
    NotFound,
    OutputInvalid,
)
from appliance.gateway.types import ChatInput, Trace
from appliance.inference.base import (
    TIERS,
    ChoiceScorer,
    Delta,
    Generation,
    GenerationRequest,
    Message,
    Tier,
    Usage,
)
from appliance.inference.embedded import embedded_backend
from appliance.inference.registry import BackendSpec, Registry, build_pool, load_spec
from appliance.inference.router import Route, Router, RouterConfig, estimate_tokens
from appliance.tasks import runner
from appliance.tasks.runner import Escalate, TaskRules
from appliance.tasks.templates import TaskCatalog, TaskTemplate
from appliance.tasks.types import TaskInput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy import Engine

    from appliance.auth.actor import Actor
    from appliance.config import Settings
    from appliance.inference.base import Backend, ModelInfo
    from appliance.policies.schema import LoadedPolicy

# Actions after which no original identifier is left in the text.
SAFE_FOR_EXTERNAL = frozenset({"redact", "pseudonymize"})


class RouteOverride(Protocol):
    """What an evaluation set for one task in place of the settings (`appliance.eval.overrides`)."""

    @property
    def model(self) -> str | None: ...

    @property
    def threshold(self) -> float | None: ...

    def note(self) -> str:
        """How the receipt's route reason names the change."""
        ...


class RouteOverrides(Protocol):
    """The per-task overrides in force (`appliance.eval.overrides.RoutingOverrides`)."""

    def for_task(self, task: str | None) -> RouteOverride | None:
        """The override of `task`, if any."""
        ...


def _routing_rules(policy: LoadedPolicy | None) -> tuple[bool, Tier]:
    """(allow_external, max_tier) of a policy; absent fields mean the strict defaults."""
    routing = getattr(policy.policy, "routing", None) if policy is not None else None
    allow = bool(getattr(routing, "allow_external", False))
    max_tier: Tier = getattr(routing, "max_tier", "large") or "large"
    if allow and max_tier != "external":
        max_tier = "external"
    return allow, max_tier


class _RoutedEngine:
    """The model the route points at now, as the task runner sees it."""

    def __init__(self, steps: RoutingSteps, trace: Trace) -> None:
        assert trace.route is not None
        self._steps = steps
        self._trace = trace
        self.model = trace.route.model
        self.context_length = steps.router.context_of(self.model)

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._steps.generate(self._trace, replace(request, model=self.model))

    async def score(
        self, request: GenerationRequest, choices: list[str]
    ) -> dict[str, float] | None:
        backend, _ = self._steps.registry.resolve(self.model)
        if not isinstance(backend, ChoiceScorer):
            return None
        started = time.perf_counter()
        scores = await backend.score_choices(replace(request, model=self.model), choices)
        elapsed = time.perf_counter() - started
        prompt = sum(estimate_tokens(m.content) for m in request.messages)
        self._trace.generations.append(
            Generation(
                content="",
                model=self.model,
                finish_reason="scored",
                usage=Usage(
                    prompt_tokens=prompt, completion_tokens=0, ttft_s=elapsed, total_s=elapsed
                ),
            )
        )
        return scores


class RoutingSteps:
    """Router, escalation, task runner, usage rows and costs, as the gateway uses them."""

    def __init__(
        self,
        *,
        registry: Registry,
        router: Router,
        tasks: TaskCatalog,
        rules: TaskRules,
        costs: CostModel,
        usage: UsageLog | None,
        escalate_on_context: bool = True,
        budget: EscalationBudget | None = None,
        overrides: RouteOverrides | None = None,
    ) -> None:
        self.budget = budget
        # Default model and confidence threshold per task, as an admin applied them from an
        # evaluation (`appliance.eval.overrides`); they win over the settings.
        self.overrides = overrides
        self.registry = registry
        self.router = router
        self.tasks = tasks
        self.rules = rules
        self.costs = costs
        self.usage = usage
        self.escalate_on_context = escalate_on_context

    @classmethod
    def plain(cls, registry: Registry, *, default_model: str) -> RoutingSteps:
        """No escalation triggers, no usage table: what a bare gateway (tests, tools) gets."""
        return cls(
            registry=registry,
            router=Router(registry, RouterConfig(default_model=default_model)),
            tasks=TaskCatalog.from_directory(),
            rules=TaskRules(),
            costs=CostModel(prices=dict(DEFAULT_PRICES), reference_model="gpt-4o"),
            usage=None,
        )

    # -- before the model ------------------------------------------------------------------------
    async def decide_async(self, policy: LoadedPolicy | None, chat: ChatInput) -> Route:
        """The first route: the named model, or the task's default tier. The task's override is
        read (its change counter, on every task request) on a worker thread, so a slow
        database holds up this request and not the event loop; a request without a task reads
        nothing and stays on the loop."""
        overrides, task = self.overrides, chat.task
        override = None
        if overrides is not None and task is not None:
            override = await anyio.to_thread.run_sync(lambda: overrides.for_task(task))
        return self._decide(policy, chat, override)

    def _decide(
        self, policy: LoadedPolicy | None, chat: ChatInput, override: RouteOverride | None
    ) -> Route:
        allow, max_tier = _routing_rules(policy)
        template_tier = None
        if chat.task is not None and chat.task in self.tasks.names():
            template_tier = self.tasks.get(chat.task).tier
        # The override was read once for the request: the task runner takes its threshold from
        # the route.
        threshold = override.threshold if override is not None else None
        if override is not None and chat.model:
            override = None  # a named model wins over the override's; its threshold still holds
        if override is not None and override.model is not None:
            try:
                route = self.router.decide(
                    task=chat.task or "chat",
                    requested_model=override.model,
                    allow_external=allow,
                    max_tier=max_tier,
                )
            except (NotFound, ExternalRefused):
                pass  # the model is gone or this policy may not use it: the settings decide
            else:
                if TIERS.index(route.tier) <= TIERS.index(max_tier):
                    route.reason = override.note()
                    route.threshold = threshold
                    return route
        route = self.router.decide(
            task=chat.task or "chat",
            requested_model=chat.model,
            allow_external=allow,
            template_tier=template_tier,
            max_tier=max_tier,
        )
        if override is not None:
            route.reason = f"{route.reason}; {override.note()}"
        route.threshold = threshold
        return route

    def check_external(self, trace: Trace) -> bool:
        """Refuse an external route unless allowed and every identifier was replaced; past the
        escalation budget, keep it on-prem or refuse it, as the policy's `over_budget` says.

        False when the budget sent the route back on-prem: callers treat that as no escalation.
        """
        route = trace.route
        if route is None or route.tier != "external":
            return True
        allow, _ = _routing_rules(trace.policy)
        if not allow:
            raise ExternalRefused(
                f"model '{route.model}' is external and the policy does not allow external "
                "models; nothing was sent",
                field="model",
            )
        unsafe = sorted(e for e, a in trace.actions.items() if a not in SAFE_FOR_EXTERNAL)
        if unsafe:
            raise ExternalRefused(
                f"the text still holds identifiers ({', '.join(unsafe)}) that were not "
                "pseudonymized or redacted; an external model may not receive them, nothing "
                "was sent",
                field="model",
                entities=unsafe,
            )
        return self._within_budget(trace)

    def _within_budget(self, trace: Trace) -> bool:
        """Whether this month's external spend leaves room; else stay on-prem or refuse.

        Two small indexed queries, only on the way to an external tier, so they run inline.
        """
        route = trace.route
        if self.budget is None or route is None or self.budget.cap()[0] is None:
            return True
        status = self.budget.status()
        if not status.exhausted:
            return True
        routing = getattr(trace.policy.policy, "routing", None) if trace.policy else None
        note = (
            f"escalation budget exhausted ({status.spent_usd:.4f} of {status.cap_usd:.2f} USD "
            f"spent on external tiers in {status.month})"
        )
        fallback = None
        if route.escalations and route.escalations[-1].to_tier == "external":
            last = route.escalations[-1]
            fallback = (last.from_model, last.from_tier)
        else:
            info = self.registry.model_for_tier("large") or self.registry.model_for_tier("small")
            fallback = (info.name, info.tier) if info is not None else None
        if getattr(routing, "over_budget", "stay_on_prem") == "refuse" or fallback is None:
            retry = int((status.resets_at - datetime.now(UTC)).total_seconds()) + 1
            raise EscalationBudgetExhausted(
                f"{note}; the policy refuses requests past the budget, nothing was sent",
                retry_after=max(retry, 1),
                budget=status.to_dict(),
            )
        if route.escalations and route.escalations[-1].to_tier == "external":
            route.escalations.pop()
        route.model, route.tier = fallback
        route.reason = f"{route.reason}; {note}: kept on-prem"
        trace.model = route.model
        return False

    async def after_protect(
        self, trace: Trace, chat: ChatInput, request: GenerationRequest
    ) -> GenerationRequest:
        """Context fit and router verdict (plain chat without a named model), external rule."""
        assert trace.route is not None
        allow, _ = _routing_rules(trace.policy)
        if chat.task is None and chat.model is None:
            text = "\n".join(m.content for m in request.messages)
            config = self.router.config
            if config.router_model_enabled:
                started = time.perf_counter()
                label, p_complex = await self.router.verdict(text)
                trace.route.verdict = {
                    "label": label,
                    "p_complex": round(p_complex, 4),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                }
                if label == "complex":
                    self.router.escalate(
                        trace.route,
                        f"router model verdict complex (p={p_complex:.2f})",
                        allow_external=allow,
                    )
            while self.escalate_on_context and not self.router.fits(
                trace.route.model, text, reserve=request.max_tokens
            ):
                context = self.router.context_of(trace.route.model)
                reason = (
                    f"input of about {estimate_tokens(text)} tokens does not fit the "
                    f"{context}-token context of {trace.route.model}"
                )
                if not self.router.escalate(trace.route, reason, allow_external=allow):
                    break
        self.check_external(trace)
        return replace(request, model=trace.route.model)

    # -- the model -------------------------------------------------------------------------------
    def _fallback(self, trace: Trace, exc: BackendUnavailable) -> bool:
        assert trace.route is not None
        allow, _ = _routing_rules(trace.policy)
        moved = self.router.escalate(
            trace.route, f"{trace.route.model} unavailable ({exc.code})", allow_external=allow
        )
        if moved:
            moved = self.check_external(trace)
            trace.model = trace.route.model
        return moved

    async def generate(self, trace: Trace, request: GenerationRequest) -> Generation:
        """Generate on the route's model; if every node of it is down, fall back a tier up."""
        assert trace.route is not None
        while True:
            backend, _ = self.registry.resolve(trace.route.model)
            try:
                generation = await backend.generate(replace(request, model=trace.route.model))
            except BackendUnavailable as exc:
                if not self._fallback(trace, exc):
                    raise
                continue
            trace.generations.append(generation)
            return generation

    async def stream(
        self, trace: Trace, request: GenerationRequest
    ) -> tuple[AsyncIterator[Delta], Delta]:
        """A stream and its first delta; falls back a tier up when no node can start it."""
        assert trace.route is not None
        while True:
            backend, _ = self.registry.resolve(trace.route.model)
            deltas = backend.stream(replace(request, model=trace.route.model))
            try:
                first = await anext(deltas)
            except StopAsyncIteration:
                return _none(), Delta(content="", finish_reason="stop")
            except BackendUnavailable as exc:
                if not self._fallback(trace, exc):
                    raise
                continue
            return deltas, first

    # -- tasks -----------------------------------------------------------------------------------
    def task_input(
        self, task: TaskInput, actor: Actor
    ) -> tuple[TaskTemplate, dict[str, Any], ChatInput]:
        """The template, validated parameters and the text as a one-message chat input."""

        template = self.tasks.get(task.name)
        params = template.validate_params(task.params)
        if task.document_id is not None:
            raise NotFound(
                f"document '{task.document_id}' does not exist (no document store is configured)",
                field="document_id",
            )
        if not task.text:
            raise InvalidInput("give `text` or `document_id`", field="text")
        chat = ChatInput(
            messages=[Message(role="user", content=task.text)],
            model=task.model,
            max_tokens=template.max_tokens,
            task=task.name,
        )
        return template, params, chat

    async def run_template(
        self,
        trace: Trace,
        template: TaskTemplate,
        params: dict[str, Any],
        request: GenerationRequest,
    ) -> dict[str, Any]:
        """Run the task on the routed model, escalating when the runner asks to."""
        assert trace.route is not None
        protected = request.messages[0].content
        if not template.model:
            return {"text": protected}
        allow, _ = _routing_rules(trace.policy)
        rules = self.rules
        if trace.route.threshold is not None:  # an applied override's (`decide_async` read it)
            rules = replace(rules, confidence_threshold=trace.route.threshold)
        while True:
            engine = _RoutedEngine(self, trace)
            try:
                return await runner.run(template, protected, params, engine, rules)
            except Escalate as signal:
                if self.router.escalate(
                    trace.route, signal.reason, allow_external=allow
                ) and self.check_external(trace):
                    trace.model = trace.route.model
                    continue
                if signal.fallback is not None:
                    return signal.fallback | {"escalation_unavailable": signal.reason}
                if "context" in signal.reason or "chunks" in signal.reason:
                    raise InvalidInput(
                        f"{signal.reason}, and no larger tier is available", field="text"
                    ) from None
                raise OutputInvalid(f"{signal.reason}, and no larger tier is available") from None

    @staticmethod
    def text_fields(template: TaskTemplate, output: dict[str, Any]) -> list[str]:
        """Output fields holding model-written text, which the output scan must see."""
        if template.name in ("classify", "redact"):
            return []
        return [k for k, v in output.items() if isinstance(v, str)]

    # -- usage -----------------------------------------------------------------------------------
    def detection_row(
        self, trace: Trace, audit_id: str, *, task: str, seconds: float
    ) -> UsageRecord | None:
        """The usage row of a PII request without a model (`pii.analyze`, `pii.redact`): it
        counts among the requests and in `by_task`, never under a model or a tier."""
        if self.usage is None:
            return None
        return UsageRecord(
            request_id=trace.request_id,
            audit_id=audit_id,
            actor=trace.actor.id,
            task=task,
            model=NO_MODEL,
            tier=NO_MODEL,
            generations=0,
            latency_ms=seconds * 1000,
            frontier_model=self.costs.reference_model,
        )

    def usage_row(
        self, trace: Trace, audit_id: str | None, *, task: str, summary: bool = False
    ) -> tuple[UsageRecord | None, dict[str, Any]]:
        """The request's usage row (None without a usage table or a route), for the gateway
        to commit with the audit row, and its costs (with totals when `summary`)."""
        generations = trace.generations
        prompt = sum(g.usage.prompt_tokens for g in generations)
        completion = sum(g.usage.completion_tokens for g in generations)
        seconds = sum(g.usage.total_s for g in generations)
        ttft = generations[0].usage.ttft_s if generations else 0.0
        onprem = frontier = 0.0
        for g in generations:
            try:
                _, info = self.registry.resolve(g.model)
                hourly, tier = info.cost_per_hour, info.tier
            except NotFound:
                hourly, tier = 0.0, "small"
            cost = self.costs.cost(
                cost_per_hour=hourly,
                seconds=g.usage.total_s,
                prompt_tokens=g.usage.prompt_tokens,
                completion_tokens=g.usage.completion_tokens,
                served_by=g.model if tier == "external" else None,
            )
            onprem += cost.onprem
            frontier += cost.frontier
        route = trace.route
        row: UsageRecord | None = None
        if self.usage is not None and route is not None:
            row = UsageRecord(
                request_id=trace.request_id,
                audit_id=audit_id,
                actor=trace.actor.id,
                task=task,
                model=route.model,
                tier=route.tier,
                node=next((g.node for g in reversed(generations) if g.node), None),
                route_reason=route.reason[:300],
                escalations=len(route.escalations),
                generations=len(generations),
                prompt_tokens=prompt,
                completion_tokens=completion,
                ttft_ms=ttft * 1000,
                latency_ms=seconds * 1000,
                onprem_cost=onprem,
                frontier_cost=frontier,
                frontier_model=self.costs.reference_model,
            )
        costs: dict[str, Any] = {
            "onprem_cost": round(onprem, 8),
            "frontier_cost": round(frontier, 8),
            "frontier_model": self.costs.reference_model,
        }
        if summary:
            costs = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "generations": len(generations),
                "ttft_ms": round(ttft * 1000, 1),
                "total_ms": round(seconds * 1000, 1),
            } | costs
        return row, costs


async def _none() -> AsyncIterator[Delta]:
    return
    yield  # pragma: no cover - makes this an async generator


def build_routing(
    settings: Settings,
    engine: Engine | None,
    backends: list[Backend],
    *,
    overrides: RouteOverrides | None = None,
) -> tuple[Registry, RoutingSteps]:
    """The registry (embedded + TOML + database backends) and the routing steps, from settings
    (and the per-task overrides an evaluation applied, when given)."""
    declared: list[tuple[Backend, ModelInfo]] = []
    pools: list[Backend] = []
    specs: list[BackendSpec] = []
    if settings.inference_file is not None:
        specs.extend(load_spec(settings.inference_file).backends)
    if engine is not None:
        specs.extend(BackendSpec.model_validate(row) for row in load_backend_rows(engine))
    for spec in specs:
        pool, models = build_pool(
            spec, replicas=settings.app_replicas, retry_after_s=settings.retry_after_s
        )
        pools.append(pool)
        declared.extend((pool, info) for info in models)
    # Every pool, with or without declared models: a new Ollama node can be pulled to, and
    # what discovery finds on it is served.
    registry = Registry(
        [*backends, *pools],
        declared=declared,
        tiers=dict(settings.model_tiers),
        cost_per_hour=settings.embedded_cost_per_hour,
        context_limits=dict(settings.model_context_limits),
    )
    config = RouterConfig(
        task_tiers=dict(settings.task_tiers),
        default_model=settings.default_model,
        escalate_on_schema_failure=settings.escalate_on_schema_failure,
        schema_retries=settings.schema_retries,
        escalate_on_low_confidence=settings.escalate_on_low_confidence,
        confidence_threshold=settings.confidence_threshold,
        escalate_on_context=settings.escalate_on_context,
        max_chunks=settings.max_chunks,
        router_model_enabled=settings.router_model_enabled,
        router_model=settings.router_model,
        router_complex_threshold=settings.router_complex_threshold,
    )
    rules = TaskRules(
        schema_retries=settings.schema_retries,
        escalate_on_schema_failure=settings.escalate_on_schema_failure,
        confidence_threshold=settings.confidence_threshold,
        escalate_on_low_confidence=settings.escalate_on_low_confidence,
        escalate_on_context=settings.escalate_on_context,
        max_chunks=settings.max_chunks,
    )
    steps = RoutingSteps(
        registry=registry,
        router=Router(registry, config),
        tasks=TaskCatalog.from_directory(),
        rules=rules,
        costs=CostModel(
            prices=price_table(dict(settings.frontier_prices)),
            reference_model=settings.frontier_reference_model,
        ),
        usage=UsageLog(engine) if engine is not None else None,
        escalate_on_context=settings.escalate_on_context,
        budget=(
            EscalationBudget(engine, default_cap=settings.escalation_budget_usd)
            if engine is not None
            else None
        ),
        overrides=overrides,
    )
    return registry, steps


async def routed_models(settings: Settings) -> dict[str, tuple[ModelInfo, str]]:
    """Every routable model (embedded, TOML, database) with its backend's health (`ok`/`down`)."""
    engine: Engine | None = None
    try:
        engine = make_engine(settings.resolved_database_url)
        registry, _ = build_routing(settings, engine, [embedded_backend(settings)])
    except Exception:  # no database yet: the settings-declared backends still list
        registry, _ = build_routing(settings, None, [embedded_backend(settings)])
    try:
        await registry.discover()
        health = await registry.health()
        return {
            info.name: (info, "ok" if health[info.backend].ok else "down")
            for info in registry.models()
            if info.backend in health
        }
    finally:
        await registry.aclose()
        if engine is not None:
            engine.dispose()
