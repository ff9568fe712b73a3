"""The cheapest model that clears a quality bar, and the router's escalation threshold.

Recommendation: among the run's models whose quality is at or above the bar, the one with the
lowest on-prem cost per 1,000 requests (latency breaks ties); the margin is its quality minus
the bar.

Calibration (classification): the small model answers every item with a confidence; below a
threshold t the request escalates and takes the strong model's answer. For each t the quality
and the escalation rate follow from the two models' answers on the same items; the chosen
threshold meets the bar with the fewest escalations. The (escalation rate, quality) points are
the curve the page draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.eval.metrics import Outcome


def recommend(metrics: dict[str, dict[str, Any]], bar: float) -> dict[str, Any]:
    """The cheapest model clearing `bar`, the margin, and every model's standing."""
    standing = sorted(
        (
            {
                "model": model,
                "quality": m["quality"],
                "cost_per_1k_onprem": m["cost_per_1k_onprem"],
                "cost_per_1k_frontier": m["cost_per_1k_frontier"],
                "latency_p50_ms": m["latency_p50_ms"],
                "clears": m["quality"] >= bar,
            }
            for model, m in metrics.items()
            if m.get("items")
        ),
        key=lambda s: (s["cost_per_1k_onprem"], s["latency_p50_ms"]),
    )
    clearing = [s for s in standing if s["clears"]]
    best = max(standing, key=lambda s: s["quality"], default=None)
    if clearing:
        chosen = clearing[0]
        return {
            "bar": bar,
            "model": chosen["model"],
            "quality": chosen["quality"],
            "margin": chosen["quality"] - bar,
            "cost_per_1k_onprem": chosen["cost_per_1k_onprem"],
            "standing": standing,
        }
    return {
        "bar": bar,
        "model": None,
        "quality": best["quality"] if best else None,
        "margin": (best["quality"] - bar) if best else None,
        "best_model": best["model"] if best else None,
        "standing": standing,
    }


@dataclass(frozen=True)
class Point:
    """One threshold on the curve."""

    threshold: float
    escalation_rate: float
    quality: float


def calibrate(
    small: list[tuple[int, Outcome]],
    strong: list[tuple[int, Outcome]],
    bar: float,
) -> dict[str, Any]:
    """The threshold that meets `bar` with the fewest escalations, and the whole curve.

    Only items both models finished count; a small-model failure always escalates.
    """
    strong_by_seq = {seq: o for seq, o in strong}
    pairs = [(o, strong_by_seq[seq]) for seq, o in small if seq in strong_by_seq]
    if not pairs:
        return {"bar": bar, "items": 0, "curve": [], "threshold": None}

    def label(outcome: Outcome) -> str | None:
        return (
            str(outcome.output["label"]) if outcome.output and "label" in outcome.output else None
        )

    confidences = sorted(
        {round(o.confidence, 4) for o, _ in pairs if o.confidence is not None and label(o)}
    )
    # t = 0 never escalates; each observed confidence (and just above the highest) is a step.
    thresholds = [
        0.0,
        *[c for c in confidences if c > 0],
        min(1.0, (confidences[-1] if confidences else 0) + 1e-4),
    ]
    curve: list[Point] = []
    for t in sorted(set(thresholds)):
        right = escalated = 0
        for small_o, strong_o in pairs:
            small_label = label(small_o)
            low = small_label is None or (small_o.confidence or 0.0) < t
            answer = label(strong_o) if low else small_label
            escalated += int(low)
            right += int(answer == str(small_o.expected))
        curve.append(Point(t, escalated / len(pairs), right / len(pairs)))
    meeting = [p for p in curve if p.quality >= bar]
    chosen = min(meeting, key=lambda p: (p.escalation_rate, -p.quality, p.threshold), default=None)
    return {
        "bar": bar,
        "items": len(pairs),
        "threshold": chosen.threshold if chosen else None,
        "escalation_rate": chosen.escalation_rate if chosen else None,
        "quality": chosen.quality if chosen else None,
        "margin": (chosen.quality - bar) if chosen else None,
        "curve": [
            {"threshold": p.threshold, "escalation_rate": p.escalation_rate, "quality": p.quality}
            for p in curve
        ],
    }


def calibration_pair(metrics: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """(small, strong): the cheapest model and the one with the best quality, when they differ."""
    ready = {m: v for m, v in metrics.items() if v.get("items")}
    if len(ready) < 2:
        return None
    small = min(ready, key=lambda m: (ready[m]["cost_per_1k_onprem"], ready[m]["latency_p50_ms"]))
    strong = max(ready, key=lambda m: (ready[m]["quality"], -ready[m]["cost_per_1k_onprem"]))
    if small == strong:
        others = [m for m in ready if m != small]
        strong = max(others, key=lambda m: ready[m]["quality"])
    return small, strong
