"""`make bench-eval`: the shipped HR-ticket set run against both bundled models, written to EVAL.md.

The real command line (`python -m appliance eval run ... --json`) in a throwaway data directory:
the gateway path with the real detector and the embedded models, one item at a time. The file
records, per model, quality, latency p50/p95, tokens per second and cost per 1,000 requests,
the recommendation for a few bars and the router calibration. The cores are shared with other
work, so the load average before and after is recorded too.

Settings: `APPLIANCE_BENCH_EVAL_ITEMS` (default 40).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.config import PROJECT_ROOT
from tests.support.process import appliance_cli

OUT = PROJECT_ROOT / "tests" / "bench" / "EVAL.md"
MODELS = "smollm2-135m,gemma3-270m"
BARS = (0.1, 0.15, 0.3, 0.5)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return appliance_cli(env, *args, timeout=7200)


def main() -> None:
    """Run the benchmark and write EVAL.md."""
    items = int(os.environ.get("APPLIANCE_BENCH_EVAL_ITEMS", "40"))
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env |= {
            "APPLIANCE_DATA_DIR": str(Path(tmp) / "data"),
            "APPLIANCE_MODELS_DIR": str(PROJECT_ROOT / "var" / "models"),
        }
        _cli(env, "db", "upgrade")
        _cli(env, "eval", "samples")
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        run = _cli(
            env, "eval", "run", "hr-tickets", "--models", MODELS, "--limit", str(items), "--json"
        )
        elapsed = time.monotonic() - started
        load_after = os.getloadavg()[0]
        report: dict[str, Any] = json.loads(run.stdout)
        bars = {
            bar: json.loads(
                _cli(env, "eval", "show", report["id"], "--bar", str(bar), "--json").stdout
            )
            for bar in BARS
        }
    lines = [
        "# Evaluation benchmark",
        "",
        f"`make bench-eval`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores (shared; load average {load_before:.1f} before, "
        f"{load_after:.1f} after).",
        "",
        f"The first {items} items of the shipped `hr-tickets` set (classify, five labels), both "
        f"bundled models, through the gateway (default policy, PII detection on every input), one "
        f"item at a time: {report['total']} requests in {elapsed:.0f} s including start-up.",
        "",
        "| model | accuracy | macro-F1 | latency p50 | p95 | tokens/s | on-prem $/1k | "
        "frontier-equivalent $/1k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["metrics"]["models"].items():
        lines.append(
            f"| {name} | {m['accuracy']:.1%} | {m['macro_f1']:.1%} | "
            f"{m['latency_p50_ms']:.0f} ms | {m['latency_p95_ms']:.0f} ms | "
            f"{m['tokens_per_s']:.0f} | {m['cost_per_1k_onprem']:.4f} | "
            f"{m['cost_per_1k_frontier']:.4f} |"
        )
    lines += [
        "",
        "| quality bar | recommended | margin | calibrated threshold | escalated |",
        "|---|---|---|---|---|",
    ]
    for bar, body in bars.items():
        rec, cal = body["recommendation"], body.get("calibration") or {}
        lines.append(
            f"| {bar:.0%} | {rec.get('model') or 'none'} | "
            + (f"{rec['margin']:+.1%}" if rec.get("margin") is not None else "-")
            + " | "
            + (f"{cal['threshold']:.2f}" if cal.get("threshold") is not None else "none")
            + " | "
            + (f"{cal['escalation_rate']:.0%}" if cal.get("escalation_rate") is not None else "-")
            + " |"
        )
    lines += [
        "",
        "Tokens/s counts prompt and completion tokens over the models' own time: classification "
        "scores the closed labels, so it reads the prompt and writes no completion tokens.",
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(OUT)


if __name__ == "__main__":
    main()
