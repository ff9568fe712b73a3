"""The schema bomb: a 200-byte schema asking for 100 million items is refused before any
grammar is built, at every entry point, while `/healthz` keeps answering. Issue 17, defect 3.

Kept cheap for a 2-core CI: the bombs are refused by a bounded check, so the test costs
seconds and no memory.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningAppliance

BOMB = {"type": "object", "properties": {"a": {"type": "array", "minItems": 100_000_000}}}

ENTRY_POINTS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "ollama.format",
        "/ollama/api/chat",
        {
            "model": "smollm2-135m",
            "stream": False,
            "messages": [{"role": "user", "content": "hi"}],
            "format": BOMB,
        },
        "format.properties.a.minItems",
    ),
    (
        "openai.response_format",
        "/v1/chat/completions",
        {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"schema": BOMB}},
        },
        "response_format.json_schema.schema.properties.a.minItems",
    ),
    (
        "extract.params.schema",
        "/api/v1/tasks/extract",
        {"text": "Invoice total: 40 EUR.", "params": {"schema": BOMB}},
        "params.schema.properties.a.minItems",
    ),
]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _field(body: dict[str, Any]) -> str | None:
    error = body.get("error")
    if isinstance(error, dict):
        return error.get("field") or error.get("param")
    return None


@pytest.mark.parametrize(
    ("name", "path", "body", "field"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS]
)
def test_a_schema_bomb_is_refused_naming_the_field(
    appliance: RunningAppliance, name: str, path: str, body: dict[str, Any], field: str
) -> None:
    started = time.perf_counter()
    response = appliance.client.post(path, json=body, timeout=60)

    assert response.status_code == 422, response.text
    assert time.perf_counter() - started < 5
    if path.startswith("/ollama/"):
        assert field in response.json()["error"]
    else:
        assert _field(response.json()) == field
    assert appliance.backend.requests == []


def test_bombs_keep_healthz_fast_and_memory_flat(start_appliance: Any) -> None:
    appliance: RunningAppliance = start_appliance(inference_rate_per_minute=100_000)
    baseline = _rss_mb()
    stop = threading.Event()
    statuses: list[int] = []

    def bomb() -> None:
        with httpx.Client(
            base_url=appliance.url, headers=dict(appliance.client.headers), timeout=60
        ) as client:
            while not stop.is_set():
                for _, path, body, _ in ENTRY_POINTS:
                    statuses.append(client.post(path, json=body).status_code)

    threads = [threading.Thread(target=bomb) for _ in range(2)]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    with httpx.Client(base_url=appliance.url, timeout=10) as probe:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            started = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert statuses and set(statuses) == {422}, set(statuses)
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.1, f"/healthz p99 {p99 * 1000:.0f} ms while bombs were refused"
    assert _rss_mb() - baseline < 1_536
    assert appliance.backend.requests == []
