"""Where the detector's time goes on a ~1 KB text, and what running only the needed spaCy
stages saves, measured side by side (part of `make bench-pii`, written into PII.md).

Stages are timed by wrapping one detector instance's own entry points with the calling
thread's CPU clock (`time.thread_time`), so the figures are the work on one core whatever else
the machine runs. The comparison interleaves, text by text, the detector as it runs (the stages
the policy needs, tags from windows) with the same detector made to run every spaCy stage on
every text (`_skipped_pipes` returning nothing, whole-text tagging).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STRUCTURED_ONLY = (
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "IP_ADDRESS",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
)
"""A policy that acts on identifiers only: no entity NER finds, so NER does not run."""


@dataclass
class Comparison:
    lean_p50_ms: float
    full_p50_ms: float
    structured_p50_ms: float
    calls: int


def _cpu_ms(run: Callable[[], Any]) -> float:
    started = time.thread_time()
    run()
    return (time.thread_time() - started) * 1000


def stage_profile(
    detector: Any, spec: Any, texts: list[str], repeat: int
) -> list[tuple[str, float]]:
    """(stage, CPU ms per text) for `detector.analyze(text, spec)`, largest first; the stages
    overlap as nested calls do (the Presidio engine includes the recognizers)."""
    spent: Counter[str] = Counter()

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - started

        return run

    nlp = detector._nlp
    engine = detector._engine
    originals = {
        "_nlp": nlp,
        "_tag_tokens": detector._tag_tokens,
        "_digit_pass": detector._digit_pass,
    }
    recognizers = list(engine.registry.recognizers)
    analyses = {id(r): r.analyze for r in recognizers}
    engine_analyze = engine.analyze

    class TimedPipeline:
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return timed("spaCy: tokenizer and NER", nlp)(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(nlp, name)

    try:
        detector._nlp = TimedPipeline()
        detector._tag_tokens = timed("spaCy: tagger on name windows", originals["_tag_tokens"])
        detector._digit_pass = timed(
            "digit recognizers on the compact view", originals["_digit_pass"]
        )
        engine.analyze = timed("Presidio engine (recognizers, context)", engine_analyze)
        for recognizer in recognizers:
            recognizer.analyze = timed(f"recognizer {recognizer.name}", recognizer.analyze)
        for text in texts[:3]:
            detector.analyze(text, spec)
        spent.clear()
        total = 0.0
        for _ in range(repeat):
            for text in texts:
                total += _cpu_ms(lambda text=text: detector.analyze(text, spec))
    finally:
        for name, value in originals.items():
            setattr(detector, name, value)
        engine.analyze = engine_analyze
        for recognizer in recognizers:
            recognizer.analyze = analyses[id(recognizer)]
    calls = repeat * len(texts)
    stages = [("whole analysis", total / calls)]
    recognizer_total = sum(v for k, v in spent.items() if k.startswith("recognizer "))
    stages += [
        (k, v * 1000 / calls) for k, v in spent.most_common() if not k.startswith("recognizer ")
    ]
    stages.append(("all recognizers together", recognizer_total * 1000 / calls))
    stages += [
        (f"  {k}", v * 1000 / calls)
        for k, v in spent.most_common()
        if k.startswith("recognizer ") and v * 1000 / calls >= 0.5
    ]
    return stages


def compare(detector: Any, spec: Any, structured: Any, texts: list[str], repeat: int) -> Comparison:
    """Interleaved, text by text: the detector as it runs, the same detector running every
    spaCy stage on every text, and an identifiers-only policy (no NER)."""
    lean_skip, reach = detector._skipped_pipes, detector._tag_reach
    times: dict[str, list[float]] = {"lean": [], "full": [], "structured": []}

    def lean() -> None:
        detector._skipped_pipes, detector._tag_reach = lean_skip, reach

    def full() -> None:
        detector._skipped_pipes, detector._tag_reach = (lambda entities: []), None

    try:
        for text in texts[:3]:
            detector.analyze(text, spec)
        for round_ in range(repeat):
            for text in texts:
                arms = [
                    ("lean", lean, spec),
                    ("full", full, spec),
                    ("structured", lean, structured),
                ]
                if round_ % 2:
                    arms.reverse()
                for name, setup, arm_spec in arms:
                    setup()
                    run = lambda text=text, arm_spec=arm_spec: detector.analyze(text, arm_spec)  # noqa: E731
                    times[name].append(_cpu_ms(run))
    finally:
        lean()
    return Comparison(
        lean_p50_ms=statistics.median(times["lean"]),
        full_p50_ms=statistics.median(times["full"]),
        structured_p50_ms=statistics.median(times["structured"]),
        calls=len(times["lean"]),
    )


def report_lines(stages: list[tuple[str, float]], comparison: Comparison) -> list[str]:
    """The PII.md section."""
    c = comparison
    return [
        "## Where the time goes (~1 KB, `default`, one core)",
        "",
        "CPU time per text of each stage of `PiiDetector.analyze` (nested stages are included in "
        "the stage around them: the Presidio engine includes its recognizers and the tagger "
        "windows, which the name recognizer asks for).",
        "",
        "| stage | CPU ms per text |",
        "|---|---|",
        *(f"| {name} | {ms:.2f} |" for name, ms in stages),
        "",
        f"Side by side, interleaved text by text ({c.calls} calls each): the stages the policy "
        f"needs **{c.lean_p50_ms:.1f} ms** p50 against **{c.full_p50_ms:.1f} ms** with every spaCy "
        f"stage on every text ({c.lean_p50_ms / c.full_p50_ms:.2f}×); a policy that acts on "
        f"identifiers only (no entity NER finds, so no NER) **{c.structured_p50_ms:.1f} ms**.",
        "",
    ]
