"""`make bench`: measure, side by side in one run, and write tests/bench/RESULTS.md.

- PII analysis latency on ~1 KB and ~10 KB texts (p50/p99) and throughput per core;
- the gateway (HTTP + PII + audit) against calling the embedded engine directly, same model and
  prompts, interleaved: tokens/s ratio and added time to first token;
- /healthz latency while a generation runs, against idle;
- the time a second `appliance serve` needs to answer /healthz and /readyz.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from appliance.config import PROJECT_ROOT, Settings
from appliance.db.engine import upgrade
from appliance.inference.base import GenerationRequest, Message
from appliance.inference.embedded import embedded_backend
from appliance.pii.detector import DetectionSpec, load_detector
from tests.bench.report import pct
from tests.support.ports import free_port

OUT = PROJECT_ROOT / "tests" / "bench" / "RESULTS.md"
PARAGRAPH = (
    "On 3 March the claimant, John Smith, wrote to HR from john.smith@example.com and called "
    "212-555-0199 about the grievance. His manager Sarah Connor replied that the review meeting "
    "would take place at the London office. The employee asked that his medical notes stay "
    "confidential and that payroll use account GB82WEST12345698765432 from next month. "
)
PROMPTS = [
    "Summarise in two sentences why code review matters.",
    "Write a short polite reminder about a meeting tomorrow.",
    "List three benefits of on-premises language models.",
    "Explain what a privacy policy is to a new employee.",
]


def bench_pii(lines: list[str]) -> None:
    detector = load_detector(Settings().spacy_model)
    texts = {"1 KB": (PARAGRAPH * 3)[:1024], "10 KB": (PARAGRAPH * 30)[:10240]}
    lines += [
        "## PII analysis (Presidio, spaCy small model, one thread)",
        "",
        "| text | runs | p50 ms | p99 ms | KB/s |",
        "|---|---|---|---|---|",
    ]
    for label, text in texts.items():
        runs = 60 if label == "1 KB" else 15
        detector.analyze(text, DetectionSpec.everything())
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            detector.analyze(text, DetectionSpec.everything())
            times.append(time.perf_counter() - started)
        kbps = (len(text) / 1024) / statistics.mean(times)
        lines.append(
            f"| {label} | {runs} | {pct(times, 0.5) * 1000:.1f} | {pct(times, 0.99) * 1000:.1f} "
            f"| {kbps:.1f} |"
        )
    lines.append("")


def bench_gateway(lines: list[str], data_dir: Path) -> None:
    from appliance.app import create_app
    from appliance.auth import apikeys
    from tests.support.live import LiveServer

    settings = Settings(data_dir=data_dir, models_dir=PROJECT_ROOT / "var" / "models")
    upgrade(settings.resolved_database_url)
    direct = embedded_backend(settings)
    app = create_app(settings)
    rounds, max_tokens = 6, 64
    with LiveServer(app) as server:
        server.wait_ready()
        gw_tps, dir_tps, gw_ttft, dir_ttft = [], [], [], []
        _, key = apikeys.create(
            app.state.appliance.engine, app.state.identity.pepper, name="bench", scopes=["chat"]
        )
        auth = {"Authorization": f"Bearer {key}"}
        client = httpx.Client(timeout=120, headers=auth)

        def run_direct(prompt: str) -> None:
            # The same engine object the gateway uses: no HTTP, no PII scan, no audit row.
            request = GenerationRequest(
                model="smollm2-135m", messages=[Message("user", prompt)], max_tokens=max_tokens
            )
            started = time.perf_counter()
            generation = asyncio.run(direct.generate(request))
            dir_ttft.append(generation.usage.ttft_s)
            dir_tps.append(generation.usage.completion_tokens / (time.perf_counter() - started))

        def run_gateway(prompt: str) -> None:
            body = {
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
                "max_tokens": max_tokens,
            }
            started = time.perf_counter()
            first = None
            tokens = 0
            with client.stream("POST", f"{server.url}/api/v1/chat", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("event: delta") and first is None:
                        first = time.perf_counter() - started
                    if line.startswith("data:") and '"usage"' in line:
                        # The done event's token count: scanned deltas group several tokens.
                        tokens = json.loads(line[5:])["usage"]["completion_tokens"]
            gw_ttft.append(first or 0.0)
            gw_tps.append(tokens / (time.perf_counter() - started))

        for i in range(rounds):
            # Distinct prompts per call (no prompt-cache advantage) and alternating order.
            base = PROMPTS[i % len(PROMPTS)]
            pair = [
                (run_direct, f"Request {2 * i}. {base}"),
                (run_gateway, f"Request {2 * i + 1}. {base}"),
            ]
            for run, prompt in pair if i % 2 == 0 else reversed(pair):
                run(prompt)
        lines += [
            "## Gateway against the engine called directly (smollm2-135m, interleaved)",
            "",
            f"{rounds} rounds of one call each way, {max_tokens} tokens max, a distinct prompt per "
            "call and alternating order (no prompt-cache advantage either way). The gateway path "
            "includes HTTP, PII analysis of the prompt and of the streamed answer (the default "
            "policy scans output, holding back a 64-character window), the audit row and SSE "
            "framing.",
            "",
            "| path | tokens/s (median) | time to first token ms (median) |",
            "|---|---|---|",
            f"| direct engine | {statistics.median(dir_tps):.1f} | "
            f"{statistics.median(dir_ttft) * 1000:.1f} |",
            f"| through the gateway | {statistics.median(gw_tps):.1f} | "
            f"{statistics.median(gw_ttft) * 1000:.1f} |",
            "",
            f"Ratio of tokens/s: **{statistics.median(gw_tps) / statistics.median(dir_tps):.2f}**; "
            f"added time to first token: "
            f"**{(statistics.median(gw_ttft) - statistics.median(dir_ttft)) * 1000:.1f} ms** "
            "(PII scan included).",
            "",
        ]

        idle = []
        for _ in range(30):
            started = time.perf_counter()
            client.get(f"{server.url}/healthz")
            idle.append(time.perf_counter() - started)
        busy: list[float] = []
        done = threading.Event()

        def generate() -> None:
            body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 300}
            httpx.post(f"{server.url}/api/v1/chat", json=body, timeout=120, headers=auth)
            done.set()

        worker = threading.Thread(target=generate)
        worker.start()
        time.sleep(0.3)
        while not done.is_set() and len(busy) < 30:
            started = time.perf_counter()
            client.get(f"{server.url}/healthz")
            busy.append(time.perf_counter() - started)
            time.sleep(0.02)
        worker.join()
        lines += [
            "## /healthz while a generation runs",
            "",
            "| state | samples | p50 ms | max ms |",
            "|---|---|---|---|",
            f"| idle | {len(idle)} | {pct(idle, 0.5) * 1000:.1f} | {max(idle) * 1000:.1f} |",
            f"| generating | {len(busy)} | {pct(busy, 0.5) * 1000:.1f} | {max(busy) * 1000:.1f} |",
            "",
        ]


def bench_restart(lines: list[str], data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(data_dir), APPLIANCE_MODELS_DIR=str(PROJECT_ROOT / "var" / "models")
    )
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    healthy = ready = None
    try:
        while ready is None and time.perf_counter() - started < 120:
            try:
                if healthy is None and httpx.get(f"http://127.0.0.1:{port}/healthz").is_success:
                    healthy = time.perf_counter() - started
                if httpx.get(f"http://127.0.0.1:{port}/readyz").is_success:
                    ready = time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines += [
        "## Second start (database migrated, models in place)",
        "",
        f"`appliance serve` answered /healthz after **{healthy or float('nan'):.1f} s** and "
        f"was ready (detector loaded and warmed) after **{ready or float('nan'):.1f} s**.",
        "",
    ]


def main() -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        bench_pii(lines)
        bench_gateway(lines, Path(tmp) / "gw")
        bench_restart(lines, Path(tmp) / "gw")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
