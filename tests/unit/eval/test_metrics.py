"""Metrics, recommendation and calibration: tables of inputs and the numbers they must give."""

from __future__ import annotations

import pytest

from appliance.eval.metrics import Outcome, classification, extraction, model_metrics, rouge_l
from appliance.eval.recommend import calibrate, calibration_pair, recommend


def test_classification_accuracy_macro_f1_and_confusion() -> None:
    expected = ["a", "a", "b", "b", "c"]
    predicted: list[str | None] = ["a", "b", "b", "b", None]
    body = classification(expected, predicted)
    assert body["accuracy"] == pytest.approx(3 / 5)
    # F1 per label: a = 2/3, b = 0.8, c = 0 -> macro 0.4889
    assert body["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert body["confusion"]["labels"] == ["a", "b", "c"]
    assert body["confusion"]["columns"] == ["a", "b", "c", "(failed)"]
    assert body["confusion"]["matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]


def test_extraction_validity_field_match_and_f1() -> None:
    expected = [
        {"number": "INV-1", "total": 12.5, "currency": "EUR"},
        {"number": "INV-2", "total": 3.0, "currency": "USD"},
    ]
    outputs = [{"number": "inv-1 ", "total": "12.50", "currency": "GBP", "extra": "x"}, None]
    body = extraction(expected, outputs)
    assert body["json_validity"] == 0.5
    assert body["field_exact_match"] == pytest.approx(2 / 6)  # recall over expected fields
    assert body["field_precision"] == pytest.approx(2 / 4)
    assert body["field_f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert body["exact_match"] == 0.0


@pytest.mark.parametrize(
    ("reference", "candidate", "score"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("the cat sat on the mat", "", 0.0),
        ("the cat sat", "dogs bark loudly", 0.0),
        # LCS "the cat the mat" = 4 of 6 and 4 of 5 -> F1 = 2*(4/5)(4/6)/(4/5+4/6)
        ("the cat sat on the mat", "The cat lay the mat", 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6)),
    ],
)
def test_rouge_l(reference: str, candidate: str, score: float) -> None:
    assert rouge_l(reference, candidate) == pytest.approx(score)


def test_model_metrics_speed_and_cost_per_thousand() -> None:
    outcomes = [
        Outcome(
            "a",
            {"label": "a"},
            latency_ms=100,
            generation_ms=50,
            prompt_tokens=40,
            completion_tokens=10,
            onprem_cost=0.001,
            frontier_cost=0.01,
        ),
        Outcome(
            "b",
            {"label": "a"},
            latency_ms=300,
            generation_ms=150,
            prompt_tokens=40,
            completion_tokens=10,
            onprem_cost=0.003,
            frontier_cost=0.03,
        ),
    ]
    body = model_metrics("classify", outcomes)
    assert body["quality"] == 0.5
    assert body["latency_p50_ms"] == 100 and body["latency_p95_ms"] == 300
    assert body["tokens_per_s"] == pytest.approx(100 / 0.2)
    assert body["cost_per_1k_onprem"] == pytest.approx(2.0)
    assert body["cost_per_1k_frontier"] == pytest.approx(20.0)


def _m(quality: float, cost: float) -> dict[str, float]:
    return {
        "items": 10,
        "quality": quality,
        "cost_per_1k_onprem": cost,
        "cost_per_1k_frontier": 1.0,
        "latency_p50_ms": cost * 100,
    }


def test_recommendation_is_the_cheapest_model_over_the_bar_with_its_margin() -> None:
    metrics = {"small": _m(0.72, 0.1), "large": _m(0.91, 0.4), "huge": _m(0.95, 2.0)}
    assert recommend(metrics, 0.7)["model"] == "small"
    rec = recommend(metrics, 0.9)
    assert rec["model"] == "large" and rec["margin"] == pytest.approx(0.01)
    none = recommend(metrics, 0.99)
    assert none["model"] is None and none["best_model"] == "huge"
    assert none["margin"] == pytest.approx(-0.04)
    assert calibration_pair(metrics) == ("small", "huge")


def test_calibration_picks_the_fewest_escalations_that_meet_the_bar() -> None:
    # Small model: right when confident (0.9, 0.8), wrong when not (0.4, 0.3); strong always right.
    small = [
        (0, Outcome("x", {"label": "x"}, confidence=0.9)),
        (1, Outcome("y", {"label": "y"}, confidence=0.8)),
        (2, Outcome("x", {"label": "y"}, confidence=0.4)),
        (3, Outcome("y", {"label": "x"}, confidence=0.3)),
    ]
    strong = [(i, Outcome(o.expected, {"label": o.expected})) for i, o in small]
    body = calibrate(small, strong, 1.0)
    assert body["threshold"] == pytest.approx(0.8)  # escalates 0.4 and 0.3 only
    assert body["escalation_rate"] == 0.5 and body["quality"] == 1.0
    curve = {round(p["threshold"], 4): (p["escalation_rate"], p["quality"]) for p in body["curve"]}
    assert curve[0.0] == (0.0, 0.5)
    assert curve[0.4] == (0.25, 0.75)
    assert max(curve) > 0.9 and curve[max(curve)] == (1.0, 1.0)
    assert calibrate(small, strong, 0.5)["threshold"] == 0.0
