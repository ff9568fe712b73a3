"""One generation per model at a time, a bounded queue, and an event loop that stays free."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import RunningAppliance
from tests.integration.api.sse import events
from tests.integration.api.test_chat import audit_rows

LONG = {"role": "user", "content": "Tell a long story about a lighthouse keeper and the sea."}


def _wait_until(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_healthz_answers_while_a_generation_runs(appliance: RunningAppliance) -> None:
    gate = appliance.backend.inner.gate("smollm2-135m")  # type: ignore[attr-defined]
    body = {"messages": [LONG], "stream": True, "max_tokens": 400}
    with appliance.client.stream("POST", "/api/v1/chat", json=body, timeout=120) as response:
        stream = events(response)
        assert next(stream)[0] == "delta"
        assert gate.busy

        health = appliance.client.get("/healthz", timeout=5)

        # Answered while the model was still generating this request.
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert gate.busy
        rest = [name for name, _ in stream]
    assert rest[-1] == "done"


def test_full_queue_gets_503_with_retry_after(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(generation_queue_size=1, retry_after_s=7)
    gate = app.backend.inner.gate("smollm2-135m")  # type: ignore[attr-defined]
    body = {"messages": [LONG], "stream": True, "max_tokens": 300}
    waiting_result: list[httpx.Response] = []

    with app.client.stream("POST", "/api/v1/chat", json=body, timeout=120) as first:
        stream = events(first)
        assert next(stream)[0] == "delta"
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(
                app.client.post,
                "/api/v1/chat",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                timeout=120,
            )
            _wait_until(lambda: gate.waiting == 1)

            refused = app.client.post(
                "/api/v1/chat",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                timeout=30,
            )
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "7"
            assert refused.json()["error"]["code"] == "backend_busy"

            list(stream)  # let the first generation finish
            waiting_result.append(queued.result(timeout=120))
    assert waiting_result[0].status_code == 200


def test_a_dropped_stream_frees_the_model(appliance: RunningAppliance) -> None:
    gate = appliance.backend.inner.gate("smollm2-135m")  # type: ignore[attr-defined]
    body = {"messages": [LONG], "stream": True, "max_tokens": 500}
    with appliance.client.stream("POST", "/api/v1/chat", json=body, timeout=120) as response:
        assert next(events(response))[0] == "delta"
    # The client went away mid-stream: generation stops and the model is free again.
    _wait_until(lambda: not gate.busy, timeout=30)
    after = appliance.client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert after.status_code == 200
    _wait_until(lambda: len(audit_rows(appliance)) == 2, timeout=10)
    assert sorted(r.outcome for r in audit_rows(appliance)) == ["allowed", "cancelled"]
