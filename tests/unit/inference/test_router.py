"""The router: first decision by task and tier, escalation up the ladder, the external rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ExternalRefused
from appliance.inference.base import ModelInfo
from appliance.inference.bundled import BUNDLED
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.openai_compat import OpenAICompatBackend
from appliance.inference.registry import Registry
from appliance.inference.router import Router, RouterConfig, estimate_tokens


@pytest.fixture
def registry(models_dir: Path) -> Registry:
    embedded = LlamaCppBackend(
        [LocalModel(m.name, models_dir / m.filename, m.chat_format) for m in BUNDLED],
        threads=2, context=2048, queue_size=2, retry_after=1, timeout_s=60,
    )  # fmt: skip
    frontier = OpenAICompatBackend(base_url="http://127.0.0.1:9/v1", name="frontier")
    external = ModelInfo(name="gpt-4o", backend="frontier", context_length=128000, tier="external")
    return Registry(
        [embedded],
        declared=[(frontier, external)],
        tiers={"smollm2-135m": "small", "gemma3-270m": "large"},
    )


def router(registry: Registry, **config: object) -> Router:
    return Router(registry, RouterConfig(default_model="smollm2-135m", **config))  # type: ignore[arg-type]


def test_task_type_sets_the_default_tier(registry: Registry) -> None:
    r = router(registry, task_tiers={"summarize": "large"})
    chat = r.decide(task="chat", requested_model=None, allow_external=False)
    assert (chat.model, chat.tier) == ("smollm2-135m", "small")
    assert chat.reason == "task 'chat' defaults to tier small"
    summary = r.decide(task="summarize", requested_model=None, allow_external=False)
    assert (summary.model, summary.tier) == ("gemma3-270m", "large")
    from_template = r.decide(
        task="extract", requested_model=None, allow_external=False, template_tier="large"
    )
    assert from_template.tier == "large"


def test_named_model_wins_and_says_so(registry: Registry) -> None:
    route = router(registry).decide(
        task="chat", requested_model="gemma3-270m", allow_external=False
    )
    assert (route.model, route.tier, route.reason) == ("gemma3-270m", "large", "requested model")


def test_external_model_needs_the_policy(registry: Registry) -> None:
    r = router(registry)
    with pytest.raises(ExternalRefused):
        r.decide(task="chat", requested_model="gpt-4o", allow_external=False)
    assert r.decide(task="chat", requested_model="gpt-4o", allow_external=True).tier == "external"


def test_external_task_tier_falls_back_to_large_when_not_allowed(registry: Registry) -> None:
    r = router(registry, task_tiers={"ask": "external"})
    route = r.decide(task="ask", requested_model=None, allow_external=False)
    assert route.tier == "large"
    assert "external not allowed" in route.reason


def test_policy_max_tier_caps_the_choice(registry: Registry) -> None:
    r = router(registry, task_tiers={"ask": "large"})
    route = r.decide(task="ask", requested_model=None, allow_external=False, max_tier="small")
    assert route.tier == "small"
    assert "capped at small" in route.reason


def test_escalation_climbs_one_tier_and_records_why(registry: Registry) -> None:
    r = router(registry)
    route = r.decide(task="chat", requested_model=None, allow_external=False)
    assert r.escalate(route, "low confidence", allow_external=False)
    assert (route.model, route.tier) == ("gemma3-270m", "large")
    assert route.to_dict()["escalations"] == [
        {
            "from": {"model": "smollm2-135m", "tier": "small"},
            "to": {"model": "gemma3-270m", "tier": "large"},
            "reason": "low confidence",
        }
    ]
    # The top on-prem tier: external only when allowed.
    assert not r.escalate(route, "again", allow_external=False)
    assert r.escalate(route, "again", allow_external=True)
    assert route.tier == "external"


def test_context_fit_uses_a_high_token_estimate(registry: Registry) -> None:
    r = router(registry)
    assert estimate_tokens("x" * 300) == 101
    assert r.fits("smollm2-135m", "x" * 3000, reserve=100)
    assert not r.fits("smollm2-135m", "x" * 6000, reserve=100)


def test_decision_is_recorded_with_its_time(registry: Registry) -> None:
    route = router(registry).decide(task="chat", requested_model=None, allow_external=False)
    assert 0 <= route.decision_ms < 1000
    assert route.to_dict()["decision_ms"] == round(route.decision_ms, 3)


@pytest.mark.parametrize(("threshold", "label"), [(0.0, "complex"), (1.0, "simple")])
async def test_router_model_verdict_scores_both_answers(
    registry: Registry, threshold: float, label: str
) -> None:
    r = router(registry, router_model="smollm2-135m", router_complex_threshold=threshold)
    verdict, p_complex = await r.verdict("Prove that there are infinitely many primes.")
    assert 0.0 < p_complex < 1.0
    assert verdict == label
