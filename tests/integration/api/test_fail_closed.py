"""If PII detection fails or is not loaded, nothing reaches a model (503) and the refusal is
audited. The detector is broken on purpose here."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from appliance.pii.detector import DetectionSpec, Finding
from tests.conftest import RunningAppliance
from tests.integration.api.test_chat import PERSONAL, audit_rows


class BrokenDetector:
    """A deliberately failing detector, standing in for a crashed analysis."""

    def analyze(self, text: str, spec: DetectionSpec) -> list[Finding]:
        raise RuntimeError("analysis crashed")

    def analyze_many(self, texts: list[str], spec: DetectionSpec) -> list[list[Finding]]:
        return [self.analyze(text, spec) for text in texts]


class StalledDetector:
    """A detector that hangs until released, standing in for an analysis that never ends."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()

    def analyze(self, text: str, spec: DetectionSpec) -> list[Finding]:
        self.release.wait(30)
        self.finished.set()
        return []

    def analyze_many(self, texts: list[str], spec: DetectionSpec) -> list[list[Finding]]:
        return [self.analyze(text, spec) for text in texts]


@pytest.mark.parametrize("stream", [False, True])
def test_analysis_error_fails_closed(appliance: RunningAppliance, stream: bool) -> None:
    appliance.services.detector.set_ready(BrokenDetector())  # type: ignore[arg-type]

    response = appliance.client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": PERSONAL}], "stream": stream},
        timeout=30,
    )

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "detector_unavailable"
    assert "nothing was sent" in error["message"]
    assert appliance.backend.requests == []
    rows = audit_rows(appliance)
    assert [(r.outcome, r.status_code) for r in rows] == [("detector_unavailable", 503)]


def test_analysis_timeout_fails_closed(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(detector_timeout_s=0.2)
    stalled = StalledDetector()
    app.services.detector.set_ready(stalled)  # type: ignore[arg-type]

    try:
        response = app.client.post(
            "/api/v1/chat",
            json={"messages": [{"role": "user", "content": PERSONAL}]},
            timeout=30,
        )
    finally:
        stalled.release.set()
        assert stalled.finished.wait(10)

    assert response.status_code == 503
    assert "timed out" in response.json()["error"]["message"]
    assert app.backend.requests == []


def test_detector_that_cannot_load_keeps_the_server_unready(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(wait_ready=False, spacy_model="no_such_spacy_model")

    ready = None
    for _ in range(200):
        ready = app.client.get("/readyz", timeout=10)
        if "failed" in ready.json()["checks"]["detector"]:
            break
    assert ready is not None and ready.status_code == 503
    assert "no_such_spacy_model" in ready.json()["checks"]["detector"]
    assert app.client.get("/healthz", timeout=10).status_code == 200

    response = app.client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "detector_unavailable"
    assert app.backend.requests == []
