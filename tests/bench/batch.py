"""`make bench-batch`: 1,000 classify items as a batch job, interactive latency beside it.

One run against the real server process (`python -m appliance serve`), written to BATCH.md:
- interactive chat latency (p50/p95) side by side: rounds of an idle window, then a window while
  a small batch runs; the target is busy p95 within 1.5x of idle p95. The machine's cores are
  shared with other work, so the load average is recorded beside every window;
- 1,000 classify items as one job with its progress and throughput, and a `kill -9` of the
  server mid-way: a new server on the same database resumes the job and completes it without
  running a finished item again (checked per item against the audit trail: one row per item).

Settings: `APPLIANCE_BENCH_BATCH_ITEMS` (default 1,000), `APPLIANCE_BENCH_BATCH_ROUNDS`
(interactive requests per window, default 20), `APPLIANCE_BENCH_LATENCY_ROUNDS` (default 4).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from appliance.audit.store import EVENTS_TABLE
from appliance.batches.models import BatchItem
from appliance.config import PROJECT_ROOT, Settings
from appliance.db.engine import make_engine
from tests.bench.report import pct
from tests.support.process import appliance_cli, free_port, start_server

OUT = PROJECT_ROOT / "tests" / "bench" / "BATCH.md"
MODELS = Path(os.environ.get("APPLIANCE_TEST_MODELS_DIR", PROJECT_ROOT / "var" / "models"))
ITEMS = int(os.environ.get("APPLIANCE_BENCH_BATCH_ITEMS", "1000"))
ROUNDS = int(os.environ.get("APPLIANCE_BENCH_BATCH_ROUNDS", "20"))
LATENCY_ROUNDS = int(os.environ.get("APPLIANCE_BENCH_LATENCY_ROUNDS", "4"))
# A user's pause between requests; longer than `batch_quiet_s`, so the batch runs in between and
# each request arrives while a batch item is in progress.
THINK_S = float(os.environ.get("APPLIANCE_BENCH_THINK_S", "1.0"))
BATCH_PER_ROUND = 40
PROGRESS_EVERY_S = 30
LABELS = ["meeting", "invoice", "recipe"]
SENTENCES = [
    "Team sync moved to Thursday at ten in room four.",
    "Please pay the attached bill for March by Friday.",
    "Whisk two eggs with flour and bake for twenty minutes.",
]
PROMPTS = [
    "Write one short sentence about the weather.",
    "Name a colour.",
    "Say hello to the team.",
    "Give one tip for a tidy desk.",
]


def load() -> float:
    return os.getloadavg()[0]


def interactive(client: httpx.Client, rounds: int) -> list[float]:
    """Latency (ms) of sequential chat requests, `THINK_S` apart like a user."""
    latencies = []
    for i in range(rounds):
        started = time.perf_counter()
        response = client.post(
            "/api/v1/chat",
            json={
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": 16,
            },
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        time.sleep(THINK_S)
    return latencies


def status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/api/v1/batches/{job_id}").json()
    return body


def finished_seqs(database_url: str, job_id: str) -> set[int]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(BatchItem.seq, BatchItem.status).where(  # type: ignore[call-overload]
                    BatchItem.job_id == job_id
                )
            )
            return {int(seq) for seq, state in rows if state != "pending"}
    finally:
        engine.dispose()


def audit_rows(database_url: str, job_id: str) -> Counter[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(EVENTS_TABLE.c.request_id).where(
                    EVENTS_TABLE.c.request_id.startswith(f"batch:{job_id}:")
                )
            )
            return Counter(str(r[0]) for r in rows)
    finally:
        engine.dispose()


def submit(client: httpx.Client, count: int, offset: int = 0) -> str:
    """Create a classify batch of `count` items; returns its id."""
    lines = b"".join(
        json.dumps({"id": i, "text": f"{SENTENCES[i % 3]} (#{i})"}).encode() + b"\n"
        for i in range(offset, offset + count)
    )
    response = client.post(
        "/api/v1/batches",
        files={"file": ("items.jsonl", lines)},
        data={"task": "classify", "params": json.dumps({"labels": LABELS})},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_done(client: httpx.Client, job_id: str, at_least: int) -> dict[str, Any]:
    while (now := status(client, job_id))["counts"]["done"] < at_least:
        time.sleep(0.2)
    return now


def latency_rounds(client: httpx.Client, note: Any) -> list[dict[str, Any]]:
    """Idle and busy windows side by side, several times: each round measures interactive
    latency with no batch, then while a small batch job is running (then lets it finish)."""
    rounds = []
    for k in range(LATENCY_ROUNDS):
        load_idle = load()
        idle = interactive(client, ROUNDS)
        job_id = submit(client, BATCH_PER_ROUND)
        at_start = wait_done(client, job_id, 2)["counts"]["done"]
        load_busy = load()
        busy = interactive(client, ROUNDS)
        advanced = status(client, job_id)["counts"]["done"] - at_start
        while status(client, job_id)["status"] != "completed":
            time.sleep(0.5)
        rounds.append(
            {"idle": idle, "busy": busy, "load_idle": load_idle, "load_busy": load_busy}
            | {"advanced": advanced}
        )
        note(
            f"round {k + 1}: idle p95 {pct(idle, 0.95):.0f} ms (load {load_idle:.1f}), busy p95 "
            f"{pct(busy, 0.95):.0f} ms (load {load_busy:.1f}), ratio "
            f"{pct(busy, 0.95) / pct(idle, 0.95):.2f}; the batch advanced {advanced} items"
        )
    return rounds


def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    log = data_dir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_DATA_DIR=str(data_dir), APPLIANCE_MODELS_DIR=str(MODELS))
    settings = Settings(data_dir=data_dir, models_dir=MODELS)
    database_url = settings.resolved_database_url
    appliance_cli(env, "db", "upgrade")
    key = appliance_cli(env, "keys", "create", "--name", "bench", "--scopes", "tasks,chat").stdout
    headers = {"Authorization": f"Bearer {key.strip().splitlines()[-1]}"}
    port = free_port()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300)
    server = start_server(env, port, log, timeout=180)
    progress: list[str] = []

    def note(text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        progress.append(f"{stamp} {text}")
        print(progress[-1], flush=True)

    # Warm both paths (the interactive and the batch model instances) before measuring.
    interactive(client, 5)
    wait_done(client, submit(client, 3), 3)
    rounds = latency_rounds(client, note) if LATENCY_ROUNDS else []

    def partial(state: str) -> None:
        # Written as the run goes, so an interrupted run still leaves its numbers.
        write(settings=settings, rounds=rounds, progress=progress, batch=[f"| state | {state} |"])

    partial("the 1,000-item run has started")
    # The big batch: progress, kill -9 mid-way, resume.
    job_id = submit(client, ITEMS)
    created = time.perf_counter()
    note(f"submitted {ITEMS} items")
    kill_at = ITEMS * 2 // 5
    while (now := status(client, job_id))["counts"]["done"] < kill_at:
        note(
            f"progress {now['counts']['done']}/{ITEMS}, rate {now['rate_per_s']} items/s, "
            f"ETA {now['eta_s']} s"
        )
        partial(f"running: {now['counts']['done']} / {ITEMS} done, not yet killed")
        time.sleep(PROGRESS_EVERY_S if now["counts"]["done"] < kill_at - 30 else 1)
    during = now
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=60)
    stopped_at = time.perf_counter()
    finished_before = finished_seqs(database_url, job_id)
    note(f"killed the server (SIGKILL) with {len(finished_before)} items finished")

    server = start_server(env, port, log, timeout=180)
    restarted_at = time.perf_counter()
    note(f"restarted after {restarted_at - stopped_at:.1f} s")
    while (final := status(client, job_id))["status"] != "completed":
        note(
            f"progress {final['counts']['done']}/{ITEMS}, rate {final['rate_per_s']} items/s, "
            f"ETA {final['eta_s']} s"
        )
        partial(
            f"running after the kill -9: {len(finished_before)} finished before it, "
            f"{final['counts']['done']} / {ITEMS} done now"
        )
        time.sleep(PROGRESS_EVERY_S)
    finished = time.perf_counter()
    note(f"completed: {final['counts']}")
    results = [
        json.loads(line)
        for line in client.get(f"/api/v1/batches/{job_id}/results").text.splitlines()
    ]
    client.close()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)

    audited = audit_rows(database_url, job_id)
    redone = [s for s in finished_before if audited[f"batch:{job_id}:{s}"] != 1]
    once = sum(1 for v in audited.values() if v == 1)
    correct = sum(r.get("output", {}).get("label") == LABELS[int(r["id"]) % 3] for r in results)
    run_s = (stopped_at - created) + (finished - restarted_at)
    write(
        settings=settings,
        rounds=rounds,
        progress=progress,
        batch=[
            f"| items | {ITEMS} (classify, 3 labels) |",
            f"| done / failed | {final['counts']['done']} / {final['counts']['failed']} |",
            f"| running time (excluding the restart gap) | {run_s:.0f} s |",
            f"| throughput | {ITEMS / run_s:.2f} items/s |",
            f"| rate / ETA reported by the API just before the kill | "
            f"{during['rate_per_s']} items/s, {during['eta_s']} s |",
            f"| finished before the kill -9 | {len(finished_before)} |",
            f"| restart gap (kill to ready) | {restarted_at - stopped_at:.1f} s |",
            f"| finished items run again after the restart | {len(redone)} |",
            f"| items with exactly one audit row | {once} / {ITEMS} |",
            f"| labels matching the sentence's kind | {correct} / {ITEMS} |",
        ],
    )
    print(OUT.read_text())
    if redone:
        raise SystemExit(f"{len(redone)} finished items were run again after the restart")


def write(
    *, settings: Settings, rounds: list[dict[str, Any]], progress: list[str], batch: list[str]
) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Batch jobs: throughput, restart, interactive latency beside a running batch",
        "",
        f"Measured {stamp} by `make bench-batch` (tests/bench/batch.py) on {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other work, Python {platform.python_version()}, "
        "SQLite, the server as its own process (`python -m appliance serve`), embedded llama.cpp "
        f"(`llama_threads={settings.llama_threads}`, batch instance "
        f"`batch_llama_threads={settings.batch_llama_threads}`), "
        f"`batch_concurrency={settings.batch_concurrency}`, "
        f"`batch_quiet_s={settings.batch_quiet_s}`. Knobs: `APPLIANCE_BENCH_BATCH_ITEMS` "
        f"({ITEMS}), `APPLIANCE_BENCH_BATCH_ROUNDS` ({ROUNDS} requests per window), "
        f"`APPLIANCE_BENCH_LATENCY_ROUNDS` ({LATENCY_ROUNDS}), `APPLIANCE_BENCH_THINK_S` "
        f"({THINK_S}).",
        "",
        "## Interactive chat latency beside a running batch (`POST /api/v1/chat`, 16 tokens)",
        "",
        "The load on a shared machine changes minute to minute, so each round measures side by "
        f"side: a window of {ROUNDS} sequential requests {THINK_S} s apart (a user's think time, "
        "longer than `batch_quiet_s`: the batch runs between the requests, and each request "
        "arrives while an item is in progress) with no batch, then the same window while a "
        f"{BATCH_PER_ROUND}-item classify batch is running (the job is let finish before the "
        "next round). Latencies in ms; load is the 1-minute load average at the window's start.",
        "",
        "| round | idle p50 | idle p95 | load | busy p50 | busy p95 | load | busy/idle p95 "
        "| batch items done in the busy window |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for k, r in enumerate(rounds, 1):
        ratio = pct(r["busy"], 0.95) / pct(r["idle"], 0.95)
        ratios.append(ratio)
        out.append(
            f"| {k} | {statistics.median(r['idle']):.0f} | {pct(r['idle'], 0.95):.0f} | "
            f"{r['load_idle']:.1f} | {statistics.median(r['busy']):.0f} | "
            f"{pct(r['busy'], 0.95):.0f} | {r['load_busy']:.1f} | {ratio:.2f} | {r['advanced']} |"
        )
    if rounds:
        idle = [x for r in rounds for x in r["idle"]]
        busy = [x for r in rounds for x in r["busy"]]
        pooled = pct(busy, 0.95) / pct(idle, 0.95)
        median = statistics.median(ratios)
        verdict = "Within target." if median <= 1.5 else "Above target."
        out += [
            f"| all | {statistics.median(idle):.0f} | {pct(idle, 0.95):.0f} | | "
            f"{statistics.median(busy):.0f} | {pct(busy, 0.95):.0f} | | {pooled:.2f} | |",
            "",
            f"**Busy p95 / idle p95: median over rounds {median:.2f}, pooled {pooled:.2f}** "
            f"(target: at most 1.5). {verdict}",
            "",
            "Why: interactive requests take precedence. A batch item starts only after "
            "interactive traffic was quiet for `batch_quiet_s`, waits behind interactive callers "
            "at a model's gate, and runs on its own model instance (`batch_llama_threads`) that "
            "pauses between evaluation steps while an interactive request is in flight, so a "
            "request waits for one short step, never for a whole item. The batch advances in the "
            "gaps between requests (last column); under back-to-back traffic it waits. The median "
            "rises a little in the busy window: a request that arrives mid-step waits for it.",
        ]
    out += [
        "",
        "## 1,000 items with a kill -9 mid-way",
        "",
        "| measure | value |",
        "|---|---|",
        *batch,
        "",
        "## Progress as the API reported it (`GET /api/v1/batches/{id}`)",
        "",
        "```",
        *progress,
        "```",
        "",
    ]
    OUT.write_text("\n".join(out))


if __name__ == "__main__":
    main()
