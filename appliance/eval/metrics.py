"""Quality and speed metrics of one model's outputs on a golden set.

- classify: accuracy, macro-F1 over the expected labels, confusion matrix;
- extract: JSON validity, field-level exact match and field F1 (micro over every field);
- summarize / ask: ROUGE-L F1 against the reference, and the judge's verdict when one ran;
- every model: latency p50/p95, tokens per second, cost per 1,000 requests (on-prem and
  frontier-equivalent).

Each task has one headline `quality` in 0..1 (accuracy, field F1, ROUGE-L) that the
recommendation compares with the bar. A failed or escalated item counts as wrong: the model under
test did not produce the answer.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

QUALITY_NAME = {
    "classify": "accuracy",
    "extract": "field F1",
    "summarize": "ROUGE-L F1",
    "ask": "ROUGE-L F1",
}
"""What `quality` means for each task."""


@dataclass(frozen=True)
class Outcome:
    """One item run on one model, opened: what the metrics need."""

    expected: Any
    output: dict[str, Any] | None
    """The task's output; None when the item failed or another model answered it."""
    latency_ms: float = 0.0
    generation_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    onprem_cost: float = 0.0
    frontier_cost: float = 0.0
    confidence: float | None = None
    judge: bool | None = None


def percentile(values: list[float], q: float) -> float:
    """The `q` percentile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


# -- classify --------------------------------------------------------------------------------------
def classification(expected: list[str], predicted: list[str | None]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over labels that occur in `expected` or `predicted`) and the
    confusion matrix (rows: expected, columns: predicted; `None` is the column of failures)."""
    labels = sorted(set(expected) | {p for p in predicted if p is not None})
    total = len(expected)
    correct = sum(1 for e, p in zip(expected, predicted, strict=True) if e == p)
    f1s: list[float] = []
    for label in labels:
        tp = sum(1 for e, p in zip(expected, predicted, strict=True) if e == label and p == label)
        fp = sum(1 for e, p in zip(expected, predicted, strict=True) if e != label and p == label)
        fn = sum(1 for e, p in zip(expected, predicted, strict=True) if e == label and p != label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    columns = [*labels, None] if any(p is None for p in predicted) else labels
    cells = Counter(zip(expected, predicted, strict=True))
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "confusion": {
            "labels": labels,
            "columns": ["(failed)" if c is None else c for c in columns],
            "matrix": [[cells[(row, col)] for col in columns] for row in labels],
        },
    }


# -- extract ---------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Field equality that forgives case, surrounding space and number formatting."""
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()
    try:
        if not isinstance(a, bool) and not isinstance(b, bool):
            return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-6)
    except (TypeError, ValueError):
        pass
    return bool(a == b)


def extraction(
    expected: list[dict[str, Any]], outputs: list[dict[str, Any] | None]
) -> dict[str, Any]:
    """JSON validity, whole-object and field-level exact match, field precision/recall/F1."""
    valid = sum(1 for o in outputs if isinstance(o, dict))
    expected_fields = predicted_fields = correct_fields = exact = 0
    for want, got in zip(expected, outputs, strict=True):
        got = got if isinstance(got, dict) else {}
        present = {k: v for k, v in got.items() if v not in (None, "")}
        hits = sum(1 for k, v in want.items() if k in present and _same(present[k], v))
        expected_fields += len(want)
        predicted_fields += len(present)
        correct_fields += hits
        exact += int(hits == len(want) and bool(want))
    precision = correct_fields / predicted_fields if predicted_fields else 0.0
    recall = correct_fields / expected_fields if expected_fields else 0.0
    total = len(expected)
    return {
        "json_validity": valid / total if total else 0.0,
        "exact_match": exact / total if total else 0.0,
        "field_exact_match": recall,
        "field_precision": precision,
        "field_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


# -- summarize / ask -------------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1: the longest common subsequence of lower-cased word tokens."""
    ref, cand = _WORD.findall(reference.lower()), _WORD.findall(candidate.lower())
    if not ref or not cand:
        return 0.0
    previous = [0] * (len(cand) + 1)
    for r in ref:
        current = [0]
        for j, c in enumerate(cand, start=1):
            current.append(previous[j - 1] + 1 if r == c else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def text_of(task: str, output: dict[str, Any] | None) -> str:
    """The generated text of a summary or an answer."""
    if output is None:
        return ""
    return str(output.get("summary" if task == "summarize" else "answer", ""))


# -- everything for one model ----------------------------------------------------------------------
def model_metrics(task: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """Every metric of one model over its finished items, with the headline `quality`."""
    n = len(outcomes)
    body: dict[str, Any] = {"items": n, "failed": sum(1 for o in outcomes if o.output is None)}
    if task == "classify":
        predicted = [
            str(o.output["label"]) if o.output is not None and "label" in o.output else None
            for o in outcomes
        ]
        body |= classification([str(o.expected) for o in outcomes], predicted)
        body["quality"] = body["accuracy"]
    elif task == "extract":
        body |= extraction(
            [o.expected if isinstance(o.expected, dict) else {} for o in outcomes],
            [o.output for o in outcomes],
        )
        body["quality"] = body["field_f1"]
    else:
        scores = [rouge_l(str(o.expected), text_of(task, o.output)) for o in outcomes]
        body["rouge_l"] = sum(scores) / n if n else 0.0
        body["quality"] = body["rouge_l"]
        verdicts = [o.judge for o in outcomes if o.judge is not None]
        if verdicts:
            body["judge_acceptable"] = sum(1 for v in verdicts if v) / len(verdicts)
            body["judged"] = len(verdicts)
    latencies = [o.latency_ms for o in outcomes]
    tokens = sum(o.prompt_tokens + o.completion_tokens for o in outcomes)
    seconds = sum(o.generation_ms for o in outcomes) / 1000
    body |= {
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p95_ms": percentile(latencies, 0.95),
        "latencies_ms": [round(v, 1) for v in latencies],
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "completion_tokens_per_s": (
            sum(o.completion_tokens for o in outcomes) / seconds if seconds > 0 else 0.0
        ),
        "cost_per_1k_onprem": 1000 * sum(o.onprem_cost for o in outcomes) / n if n else 0.0,
        "cost_per_1k_frontier": 1000 * sum(o.frontier_cost for o in outcomes) / n if n else 0.0,
    }
    return body


def parse_output(raw: str) -> dict[str, Any] | None:
    """A stored output, or None when it is not an object."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
