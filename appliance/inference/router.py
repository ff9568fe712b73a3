"""The router: which model serves a request, and when to move up a tier.

Every decision is recorded as tier + reason (and each escalation as from -> to + reason) so the
receipt explains it. Deciding is a dictionary look-up and never calls a model; only the optional
router-model verdict does (a small model scoring the closed answers `simple` / `complex`).

Triggers, each on/off and tunable in settings:
- task type -> default tier (`task_tiers`, else the template's tier, else `small`);
- the output fails its schema after N retries (`escalate_on_schema_failure`, `schema_retries`);
- a classification's confidence is below the threshold (`escalate_on_low_confidence`);
- the input does not fit the model's context even after chunking (`escalate_on_context`);
- the router model says `complex` (`router_model_enabled`, `router_complex_threshold`).
External tiers are only reachable when the request's policy allows them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import ExternalRefused, ModelNotFound
from appliance.inference.base import (
    TIERS,
    ChoiceScorer,
    GenerationRequest,
    Message,
    ModelInfo,
    Tier,
)
from appliance.inference.registry import Registry

ROUTER_PROMPT = (
    "Decide whether the request below is simple (a short answer, a rewrite, a lookup) or "
    "complex (multi-step reasoning, long analysis, specialist knowledge). Answer with one word."
)


@dataclass(frozen=True)
class RouterConfig:
    """The router's tunables (from settings)."""

    task_tiers: dict[str, Tier] = field(default_factory=dict)
    default_model: str | None = None
    escalate_on_schema_failure: bool = True
    schema_retries: int = 1
    escalate_on_low_confidence: bool = True
    confidence_threshold: float = 0.5
    escalate_on_context: bool = True
    max_chunks: int = 8
    router_model_enabled: bool = False
    router_model: str | None = None
    router_complex_threshold: float = 0.5


@dataclass(frozen=True)
class Escalation:
    """One move up the ladder and why."""

    from_model: str
    from_tier: Tier
    to_model: str
    to_tier: Tier
    reason: str


@dataclass
class Route:
    """Where a request goes now, why, and how it got there."""

    model: str
    tier: Tier
    reason: str
    escalations: list[Escalation] = field(default_factory=list)
    decision_ms: float = 0.0
    verdict: dict[str, Any] | None = None
    threshold: float | None = None
    """The task's confidence threshold from an applied routing override, if any (else the
    settings'): resolved with the route, so a request reads the overrides once."""

    def audit_details(self, task: str | None) -> dict[str, str | int | bool | None]:
        """What the audit row keeps of the route: names and counts, never text."""
        return {
            "task": task,
            "route_reason": self.reason[:200],
            "escalations": len(self.escalations),
            "escalation_reason": self.escalations[-1].reason[:200] if self.escalations else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The receipt's `route` section."""
        body: dict[str, Any] = {
            "tier": self.tier,
            "model": self.model,
            "reason": self.reason,
            "escalations": [
                {
                    "from": {"model": e.from_model, "tier": e.from_tier},
                    "to": {"model": e.to_model, "tier": e.to_tier},
                    "reason": e.reason,
                }
                for e in self.escalations
            ],
            "decision_ms": round(self.decision_ms, 3),
        }
        if self.verdict is not None:
            body["verdict"] = self.verdict
        return body


def estimate_tokens(text: str) -> int:
    """A cheap, deliberately high token estimate (about 3 characters per token).

    Routing must not call a tokenizer on the hot path; over-estimating only escalates early.
    """
    return len(text) // 3 + 1


class Router:
    """Chooses a model per request and moves requests up the tier ladder when asked."""

    def __init__(self, registry: Registry, config: RouterConfig) -> None:
        self.registry = registry
        self.config = config

    def decide(
        self,
        *,
        task: str,
        requested_model: str | None,
        allow_external: bool,
        template_tier: Tier | None = None,
        max_tier: Tier = "external",
    ) -> Route:
        """The first choice: the named model, or the task's tier's model."""
        started = time.perf_counter()
        if requested_model:
            _, named = self.registry.resolve(requested_model)
            if named.tier == "external" and not allow_external:
                raise ExternalRefused(
                    f"model '{named.name}' is external and the policy does not allow external "
                    "models; nothing was sent",
                    field="model",
                )
            route = Route(model=named.name, tier=named.tier, reason="requested model")
        else:
            tier = self.config.task_tiers.get(task) or template_tier or "small"
            reason = f"task '{task}' defaults to tier {tier}"
            if TIERS.index(tier) > TIERS.index(max_tier):
                tier, reason = max_tier, f"{reason}, capped at {max_tier} by the policy"
            if tier == "external" and not allow_external:
                tier, reason = "large", f"{reason}; external not allowed, using large"
            info: ModelInfo | None = self.registry.model_for_tier(
                tier, prefer=self.config.default_model
            )
            climbed = tier
            while info is None:
                nxt = self.registry.next_tier(climbed, allow_external=allow_external)
                if nxt is None:
                    break
                climbed = nxt
                info = self.registry.model_for_tier(climbed)
            if info is None:
                # Fall back to any on-prem model, smallest tier first.
                for candidate in ("small", "large"):
                    info = self.registry.model_for_tier(candidate)
                    if info is not None:
                        break
            if info is None:
                raise ModelNotFound(
                    f"no model serves tier {tier}", field="model", available=self.registry.names()
                )
            if info.tier != tier:
                reason = f"{reason}; no {tier} model, using {info.tier}"
            route = Route(model=info.name, tier=info.tier, reason=reason)
        route.decision_ms = (time.perf_counter() - started) * 1000
        return route

    def escalate(self, route: Route, reason: str, *, allow_external: bool) -> bool:
        """Move `route` one tier up (in place); False when there is nowhere to go."""
        tier = self.registry.next_tier(route.tier, allow_external=allow_external)
        if tier is None:
            return False
        info = self.registry.model_for_tier(tier)
        if info is None:  # pragma: no cover - next_tier only returns tiers with models
            return False
        route.escalations.append(
            Escalation(
                from_model=route.model,
                from_tier=route.tier,
                to_model=info.name,
                to_tier=info.tier,
                reason=reason,
            )
        )
        route.model, route.tier = info.name, info.tier
        return True

    def context_of(self, model: str) -> int:
        """The context length the router assumes for `model`."""
        return self.registry.resolve(model)[1].context_length

    def fits(self, model: str, text: str, *, reserve: int) -> bool:
        """Whether `text` plus `reserve` tokens (prompt and answer) fit `model`'s context."""
        return estimate_tokens(text) + reserve <= self.context_of(model)

    async def verdict(self, text: str) -> tuple[str, float]:
        """Ask the router model: `complex` probability from scoring the two closed answers."""
        model = self.config.router_model or self.config.default_model or ""
        backend, info = self.registry.resolve(model)
        request = GenerationRequest(
            model=info.name,
            messages=[
                Message(role="system", content=ROUTER_PROMPT),
                Message(role="user", content=text[: 3 * max(info.context_length // 2, 64)]),
            ],
            max_tokens=4,
        )
        if isinstance(backend, ChoiceScorer):
            scores = await backend.score_choices(request, ["simple", "complex"])
            peak = max(scores.values())
            weights = {k: math.exp(v - peak) for k, v in scores.items()}
            p_complex = weights["complex"] / sum(weights.values())
        else:
            schema = {
                "type": "object",
                "properties": {"verdict": {"enum": ["simple", "complex"]}},
                "required": ["verdict"],
            }
            generation = await backend.generate(
                GenerationRequest(
                    model=info.name, messages=request.messages, max_tokens=16, json_schema=schema
                )
            )
            p_complex = 1.0 if '"complex"' in generation.content else 0.0
        label = "complex" if p_complex >= self.config.router_complex_threshold else "simple"
        return label, p_complex
