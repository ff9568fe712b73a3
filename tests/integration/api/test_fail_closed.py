"""If PII detection fails or is not loaded, nothing reaches a model (503) and the refusal is
audited. The detector is broken on purpose here."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from appliance.pii.detector import Finding, PiiDetector
from tests.conftest import RunningAppliance
from tests.integration.api.test_chat import PERSONAL, audit_rows


class BrokenDetector:
    """A deliberately failing detector, standing in for a crashed analysis."""

    def analyze(self, text: str, *, entities: list[str] | None) -> list[Finding]:
        raise RuntimeError("analysis crashed")


class SlowDetector:
    """Wraps the real detector and stalls past the configured timeout."""

    def __init__(self, inner: PiiDetector) -> None:
        self.inner = inner

    def analyze(self, text: str, *, entities: list[str] | None) -> list[Finding]:
        import time

        time.sleep(1.5)
        return self.inner.analyze(text, entities=entities)


@pytest.mark.parametrize("stream", [False, True])
def test_analysis_error_fails_closed(appliance: RunningAppliance, stream: bool) -> None:
    appliance.services.detector.set_ready(BrokenDetector())  # type: ignore[arg-type]

    response = httpx.post(
        f"{appliance.url}/api/v1/chat",
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
    app.services.detector.set_ready(SlowDetector(app.services.detector.get()))  # type: ignore[arg-type]

    response = httpx.post(
        f"{app.url}/api/v1/chat",
        json={"messages": [{"role": "user", "content": PERSONAL}]},
        timeout=30,
    )

    assert response.status_code == 503
    assert "timed out" in response.json()["error"]["message"]
    assert app.backend.requests == []


def test_detector_that_cannot_load_keeps_the_server_unready(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(wait_ready=False, spacy_model="no_such_spacy_model")

    ready = None
    for _ in range(200):
        ready = httpx.get(f"{app.url}/readyz", timeout=10)
        if "failed" in ready.json()["checks"]["detector"]:
            break
    assert ready is not None and ready.status_code == 503
    assert "no_such_spacy_model" in ready.json()["checks"]["detector"]
    assert httpx.get(f"{app.url}/healthz", timeout=10).status_code == 200

    response = httpx.post(
        f"{app.url}/api/v1/chat",
        json={"messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "detector_unavailable"
    assert app.backend.requests == []
